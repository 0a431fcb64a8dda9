"""Benchmark what pruning buys: ``python -m pruning_utils.bench --help``.

For each model (VGG16 on 3x32x32, the autoencoder on 3x128x128, torchvision's ResNet-18 on 3x224x224, the CIFAR
ResNet-20 on 3x32x32; the ResNets with their residual channels pruned by shared selections) three variants: ``original``; ``mixed_alpha0``,
the branched model at alpha = 0 before folding (original layers skipped, expansions still separate 1x1
layers); ``folded``, the plain network that folding returns. Weights are random (seeded) unless a baseline
checkpoint or a folded file is given: speed does not depend on their values, subnormal numbers aside
(``subnormal_weights`` counts them; folding flushes them). One row per model, variant and batch size:

* ``params``, ``macs`` (one image, ``torch.utils.flop_counter``), ``checkpoint_bytes`` (``torch.save`` of the
  state_dict on disk), ``threads`` (torch's intra-op CPU threads during every timing);
* ``cpu_s_per_image`` (and ``cuda_...`` where a GPU is used): seconds per image of one eval-mode forward of a
  batch under ``torch.inference_mode``, timed by ``torch.utils.benchmark.Timer.blocked_autorange`` after a
  warm-up; the median of its blocks (over ``repeats`` runs, which alternate between the variants: the median
  of their medians), ``_iqr_`` their interquartile range, ``_min_``/``_max_`` the extreme medians of the repeats.
  The Timer synchronises CUDA before reading the clock;
* ``peak_ram_mib`` (largest batch only): the peak resident set size (VmHWM) of a fresh Python process that
  imports torch and this package, loads the model from a file and runs one batch on the CPU; ``ram_increase_mib``:
  that peak minus the peak right after the imports, i.e. what the weights and the inference added. One process
  per model, so one model's allocations never count for another (``ru_maxrss`` is not used: a child inherits
  its parent's value across fork and exec);
* ``cuda_peak_allocated_mib``: ``torch.cuda.max_memory_allocated`` over one batch minus what was allocated
  before the model went to the GPU: weights, input and activations; not the caching allocator's reserve
  and not the CUDA context.

The speed-up lines compare each variant with the original at the same batch size and device: speed-up (time
ratio), MAC ratio, and efficiency = speed-up / MAC ratio (1.0: as fast as the MAC count allows).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark
import torchvision
from torch import nn

from ..config import PACKAGE_DIR, RUNS_DIR
from ..engine.checkpoints import load_checkpoint, load_model_state
from ..engine.models import RGBAutoencoder, resnet_cifar, vgg16
from ..engine.sizes import count_macs, count_parameters, subnormal_mask
from ..harness.records import format_table, machine
from ..method.branches import attach_branches, check_keep_ratio, set_alpha
from ..method.folding import fold, fuse_batchnorm, load_plain

MODELS = {"vgg16": (3, 32, 32), "autoencoder": (3, 128, 128), "resnet18": (3, 224, 224), "resnet20": (3, 32, 32)}
VARIANTS = ("original", "mixed_alpha0", "folded")
AE_PARTS = {"encoder": ["encoder"], "decoder": ["decoder"], "both": None}
DEVICES = ("auto", "cpu", "cuda")
MIB = 2**20


# --------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------
def original_model(kind: str, width: float = 1.0, checkpoint: str | Path | None = None) -> nn.Module:
    """The unpruned model in eval mode: random weights, or those of a baseline checkpoint (a training checkpoint
    of ``pretrained`` or a bare state_dict) of the same ``kind`` and ``width``."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose from {sorted(MODELS)}")
    saved = load_checkpoint(checkpoint) if checkpoint else {}
    meta = saved.get("settings", {})  # the settings fit() stores: model, width, classifier, ...
    if meta.get("model", kind) != kind or meta.get("width", width) != width:
        raise ValueError(f"{checkpoint} holds a {meta.get('model', kind)} of width {meta.get('width')}, "
                         f"not a {kind} of width {width}: pass that model and width")
    if kind == "vgg16":
        model = vgg16(meta.get("num_classes", 10), width, meta.get("classifier", "linear"))
    elif kind == "resnet20":
        model = resnet_cifar(20, meta.get("num_classes", 10), width)
    elif kind == "resnet18":
        if width != 1.0:
            raise ValueError(f"torchvision's resnet18 has one width: pass width 1.0, not {width}")
        model = torchvision.models.resnet18(num_classes=meta.get("num_classes", 1000))
    else:
        model = RGBAutoencoder(width, meta.get("bottleneck", 128))
    if checkpoint:
        load_model_state(model, saved.get("model", saved), source=f"checkpoint {checkpoint}")
    return model.eval()


def build_variants(kind: str, width: float = 1.0, keep_ratio: float = 0.59, *, include=None,
                   channel_multiple: int = 1, fuse_bn: bool = False, seed: int = 0, checkpoint: str | Path | None = None,
                   folded_file: str | Path | None = None) -> dict[str, nn.Module]:
    """``{"original", "mixed_alpha0", "folded"}``: the original, its branched copy at alpha = 0 (branches as
    :func:`~pruning_utils.attach_branches` makes them, on the units that ``include`` selects, kept channels rounded
    to ``channel_multiple``) and its fold.

    ``fuse_bn`` fuses BatchNorm into the convolutions of the original and the folded network alike (the mixed
    model stays as it is). ``folded_file``: a network saved by ``folding.save_plain`` stands for the folded
    variant, and no mixed variant is built.
    """
    check_keep_ratio(keep_ratio)
    torch.manual_seed(seed)
    original = original_model(kind, width, checkpoint)
    if folded_file:
        return {"original": _fused(original, fuse_bn), "folded": _fused(load_plain(folded_file), fuse_bn)}
    mixed = attach_branches(copy.deepcopy(original), keep_ratio, include=include, channel_multiple=channel_multiple)
    set_alpha(mixed, 0.0)
    folded = fold(mixed.eval(), fuse_bn=fuse_bn)
    return {"original": _fused(original, fuse_bn), "mixed_alpha0": mixed, "folded": folded.eval()}


def _fused(model: nn.Module, fuse_bn: bool) -> nn.Module:
    return fuse_batchnorm(model) if fuse_bn else model


# --------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------
def time_per_image(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, *, device: str = "cpu",
                   threads: int | None = None, min_run_time: float = 1.0, repeats: int = 1,
                   channels_last: bool = False) -> dict[str, float]:
    """Seconds per image of eval-mode inference on a batch (``model`` is moved to ``device``).

    ``repeats`` ``blocked_autorange`` runs of at least ``min_run_time`` seconds each, after three warm-up calls,
    all with ``threads`` CPU threads (default: torch's current setting); summarised by :func:`summarize`.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=layout).eval()
    x = torch.randn(batch_size, *input_shape, device=device).contiguous(memory_format=layout)

    def forward():
        with torch.inference_mode():
            model(x)

    timer = benchmark.Timer(stmt="forward()", globals={"forward": forward},
                            num_threads=threads or torch.get_num_threads())
    timer.timeit(1)  # warm-up: Timer.timeit makes two untimed calls and one timed call
    runs = [timer.blocked_autorange(min_run_time=min_run_time) for _ in range(repeats)]
    return summarize([{"s_per_image": r.median / batch_size, "iqr_s_per_image": r.iqr / batch_size,
                       "blocks": len(r.times)} for r in runs])


def operator_group(name: str) -> str:
    """The group of a profiler event: conv, batch_norm, relu, max_pool, linear or other."""
    groups = (("conv", ("conv", "mkldnn")), ("batch_norm", ("batch_norm",)), ("relu", ("relu", "threshold")),
              ("max_pool", ("pool",)), ("linear", ("addmm", "linear", "aten::mm")))
    return next((group for group, keys in groups if any(k in name for k in keys)), "other")


def time_by_operator(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, threads: int | None = None,
                     steps: int = 20) -> dict[str, float]:
    """Milliseconds of one eval-mode CPU forward by operator group (:func:`operator_group`): the self CPU time that
    ``torch.profiler`` records over ``steps`` forwards after a warm-up, divided by ``steps``. Shows which parts
    of a network shrink with its MACs (convolutions) and which do not (memory-bound BatchNorm, pooling)."""
    from torch.profiler import ProfilerActivity, profile

    model = model.to("cpu").eval()
    x = torch.randn(batch_size, *input_shape)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    model(x)
    finally:
        torch.set_num_threads(previous)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        group = operator_group(event.key)
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total / steps / 1000
    return dict(sorted(totals.items()))


def summarize(runs: list[dict]) -> dict[str, float]:
    """Timing runs (each with ``s_per_image``, ``iqr_s_per_image``, ``blocks``) as one: the median of their
    medians, the median of their interquartile ranges, the smallest and largest median, the blocks in all."""
    medians = sorted(r["s_per_image"] for r in runs)
    return {"s_per_image": statistics.median(medians),
            "iqr_s_per_image": statistics.median(r["iqr_s_per_image"] for r in runs),
            "min_s_per_image": medians[0], "max_s_per_image": medians[-1],
            "blocks": sum(r["blocks"] for r in runs)}


def checkpoint_bytes(model: nn.Module) -> int:
    """Size on disk of ``torch.save(model.state_dict())``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size


def subnormal_weights(model: nn.Module) -> int:
    """Number of subnormal values in the parameters and buffers (they can slow CPU kernels down)."""
    return sum(int(subnormal_mask(t).sum()) for t in model.state_dict().values())


def peak_cuda_memory_mib(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                         channels_last: bool = False) -> float:
    """MiB allocated on the GPU at the peak of one inference batch (weights, input, activations), over what was
    allocated before; ``model`` is left on the CPU."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to("cpu")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    model.to(device="cuda", memory_format=layout)
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(torch.randn(batch_size, *input_shape, device="cuda").contiguous(memory_format=layout))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    model.to("cpu")
    return peak / MIB


def peak_ram_subprocess(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, threads: int = 1,
                        channels_last: bool = False) -> dict[str, float]:
    """Peak RAM of one CPU inference batch of ``model`` in a fresh Python process (see the module docstring):
    ``peak_ram_mib`` and ``ram_increase_mib`` over the process's peak after importing torch and this package."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        torch.save(model, path)  # the whole module: loading it allocates the weights once, with no second copy
        job = {"path": str(path), "input_shape": list(input_shape), "batch_size": batch_size, "threads": threads,
               "channels_last": channels_last}
        code = "import sys; from pruning_utils.studies import bench; bench._measure_ram_here(sys.argv[1])"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent),
                                                                         os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"the peak-RAM subprocess failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_rss_mib() -> float:
    """This process's peak resident set size: VmHWM on Linux (fresh at exec), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (MIB if sys.platform == "darwin" else 1024)


def _measure_ram_here(job_json: str) -> None:
    """The subprocess side of :func:`peak_ram_subprocess`: print the two figures as JSON."""
    job = json.loads(job_json)
    torch.set_num_threads(job["threads"])
    after_imports = _peak_rss_mib()
    layout = torch.channels_last if job["channels_last"] else torch.contiguous_format
    model = torch.load(job["path"], weights_only=False).eval()  # our own temporary file
    model.to(memory_format=layout)
    with torch.inference_mode():
        model(torch.randn(job["batch_size"], *job["input_shape"]).contiguous(memory_format=layout))
    peak = _peak_rss_mib()
    print(json.dumps({"peak_ram_mib": peak, "ram_increase_mib": peak - after_imports}))


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------
def resolve_devices(device: str = "auto") -> list[str]:
    """``"auto"``: the CPU, and the GPU where present; ``"cpu"`` or ``"cuda"``: that one alone."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU")
    if device == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [device]


def check_settings(models, *, keep_ratio: float = 0.59, batch_sizes=(1,), threads: int | None = None,
                   min_run_time: float = 1.0, repeats: int = 1, ae_part: str = "encoder", one_model_file: bool = False
                   ) -> None:
    """Raise a ValueError naming the first setting that cannot be benchmarked (``one_model_file``: a checkpoint
    or folded file was given, which belongs to a single model)."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        raise ValueError(f"unknown models {unknown or list(models)}; choose from {sorted(MODELS)}")
    check_keep_ratio(keep_ratio)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if not min_run_time > 0 or repeats < 1:
        raise ValueError(f"min run time must be positive and repeats at least 1, got {min_run_time} and {repeats}")
    if ae_part not in AE_PARTS:
        raise ValueError(f"ae_part must be one of {sorted(AE_PARTS)}, got {ae_part!r}")
    if one_model_file and len(models) != 1:
        raise ValueError("a checkpoint or folded file belongs to one model: benchmark a single model with it")


def measure(kind: str, variants: dict[str, nn.Module], batch_sizes, *, devices=("cpu",), threads: int | None = None,
            min_run_time: float = 1.0, repeats: int = 1, channels_last: bool = False, ram: bool = True,
            by_operator: bool = False, input_shape: tuple[int, ...] | None = None) -> list[dict]:
    """Rows of every variant of one model at every batch size (columns: see the module docstring; with
    ``by_operator`` also ``cpu_ms_by_operator`` from :func:`time_by_operator`). ``input_shape``: one image's
    shape, where it is not the one :data:`MODELS` gives ``kind``.

    The ``repeats`` timing runs of each case alternate between the variants, so that a slow spell of the
    machine does not fall on one variant alone.
    """
    shape, threads = tuple(input_shape or MODELS[kind]), threads or torch.get_num_threads()
    batch_sizes = sorted(set(batch_sizes))
    rows = {}
    for variant, model in variants.items():
        size = {"params": count_parameters(model), "macs": count_macs(model, shape),
                "checkpoint_bytes": checkpoint_bytes(model), "subnormal_weights": subnormal_weights(model)}
        rows[variant] = {b: {"model": kind, "variant": variant, "batch_size": b, **size, "threads": threads,
                             "channels_last": channels_last} for b in batch_sizes}
    for device in devices:
        for b in batch_sizes:
            runs = {variant: [] for variant in variants}
            for _ in range(repeats):
                for variant, model in variants.items():
                    timing = time_per_image(model, shape, b, device=device, threads=threads, min_run_time=min_run_time,
                                            channels_last=channels_last)
                    runs[variant].append(timing)
            for variant, model in variants.items():
                rows[variant][b].update({f"{device}_{k}": v for k, v in summarize(runs[variant]).items()})
                if device == "cuda":
                    rows[variant][b]["cuda_peak_allocated_mib"] = peak_cuda_memory_mib(model, shape, b, channels_last)
        for model in variants.values():
            model.to("cpu")
    if by_operator:
        for variant, model in variants.items():
            for b in batch_sizes:
                rows[variant][b]["cpu_ms_by_operator"] = time_by_operator(model, shape, b, threads)
    if ram:
        for variant, model in variants.items():
            rows[variant][batch_sizes[-1]].update(peak_ram_subprocess(model, shape, batch_sizes[-1], threads,
                                                                      channels_last))
    return [row for by_batch in rows.values() for row in by_batch.values()]


def run(models=("vgg16", "autoencoder"), *, width: float = 1.0, keep_ratio: float = 0.59, ae_part: str = "encoder",
        ae_keep_ratio: float | None = None, batch_sizes=(1, 8, 32), threads: int | None = None,
        min_run_time: float = 1.0, channel_multiple: int = 1, device: str = "auto", ram: bool = True,
        fuse_bn: bool = False, channels_last: bool = False, repeats: int = 1, checkpoint: str | Path | None = None,
        folded_file: str | Path | None = None, by_operator: bool = False) -> list[dict]:
    """Benchmark every variant of each model; one row per model, variant and batch size.

    ``ae_part``: the autoencoder's units that are pruned (VGG16: all), at ``ae_keep_ratio`` (None: ``keep_ratio``;
    0.35 is the seeds' 44-channel bottleneck). ``checkpoint`` / ``folded_file`` (one model only): see
    :func:`build_variants`.
    """
    ae_keep_ratio = keep_ratio if ae_keep_ratio is None else ae_keep_ratio
    check_settings(models, keep_ratio=keep_ratio, batch_sizes=batch_sizes, threads=threads, min_run_time=min_run_time,
                   repeats=repeats, ae_part=ae_part, one_model_file=bool(checkpoint or folded_file))
    check_keep_ratio(ae_keep_ratio)
    devices = resolve_devices(device)
    rows = []
    for kind in models:
        include, ratio = (AE_PARTS[ae_part], ae_keep_ratio) if kind == "autoencoder" else (None, keep_ratio)
        settings = {"width": width, "keep_ratio": ratio, "channel_multiple": channel_multiple, "fuse_bn": fuse_bn}
        variants = build_variants(kind, width, ratio, include=include, channel_multiple=channel_multiple,
                                  fuse_bn=fuse_bn, checkpoint=checkpoint, folded_file=folded_file)
        measured = measure(kind, variants, batch_sizes, devices=devices, threads=threads, min_run_time=min_run_time,
                           repeats=repeats, channels_last=channels_last, ram=ram, by_operator=by_operator)
        rows += [{"model": kind, "variant": row["variant"], **settings, **row} for row in measured]
    return rows


def speedups(rows: list[dict], device: str = "cpu") -> list[dict]:
    """Each pruned variant against the original (same model and batch size) on ``device``: speed-up,
    MAC ratio, parameter ratio, and efficiency = speed-up / MAC ratio."""
    key = f"{device}_s_per_image"
    originals = {(r["model"], r["batch_size"]): r for r in rows if r["variant"] == "original" and key in r}
    out = []
    for row in rows:
        base = originals.get((row["model"], row["batch_size"]))
        if row["variant"] == "original" or base is None or key not in row:
            continue
        speedup, mac_ratio = base[key] / row[key], base["macs"] / row["macs"]
        out.append({"model": row["model"], "variant": row["variant"], "device": device,
                    "batch_size": row["batch_size"], "speedup": speedup, "mac_ratio": mac_ratio,
                    "efficiency": speedup / mac_ratio, "param_ratio": base["params"] / row["params"]})
    return out


def all_speedups(rows: list[dict]) -> list[dict]:
    """:func:`speedups` on every device the rows were timed on."""
    return [s for device in ("cpu", "cuda") for s in speedups(rows, device)]


# --------------------------------------------------------------------------------------------
# Report and command line
# --------------------------------------------------------------------------------------------
def format_report(rows: list[dict]) -> str:
    """The table of rows (times in ms per image) and the table of speed-ups, as text."""
    devices = [d for d in ("cpu", "cuda") if any(f"{d}_s_per_image" in r for r in rows)]
    table = []
    for r in rows:
        line = {k: r[k] for k in ("model", "variant", "batch_size", "params", "macs", "checkpoint_bytes")}
        for d in devices:
            line[f"{d} ms/image"] = 1e3 * r[f"{d}_s_per_image"] if f"{d}_s_per_image" in r else None
            line[f"{d} IQR"] = 1e3 * r[f"{d}_iqr_s_per_image"] if f"{d}_s_per_image" in r else None
        line.update({"peak RAM MiB": r.get("peak_ram_mib"), "RAM added MiB": r.get("ram_increase_mib"),
                     "GPU peak MiB": r.get("cuda_peak_allocated_mib")})
        table.append(line)
    columns = [c for c in table[0] if any(line[c] is not None for line in table)]
    formats = {"params": ",", "macs": ",", "checkpoint_bytes": ",", "peak RAM MiB": ".0f", "RAM added MiB": ".0f",
               "GPU peak MiB": ".1f", **{f"{d} ms/image": ".4g" for d in devices},
               **{f"{d} IQR": ".2g" for d in devices}}
    gains = all_speedups(rows)
    threads = sorted({r["threads"] for r in rows})
    text = [f"CPU threads: {', '.join(map(str, threads))}", format_table(table, columns, formats)]
    if gains:
        text += ["", "speed-up over the original (efficiency = speed-up / MAC ratio):",
                 format_table(gains, ["model", "variant", "device", "batch_size", "speedup", "mac_ratio", "efficiency"],
                              {"speedup": ".2f", "mac_ratio": ".2f", "efficiency": ".2f"})]
    return "\n".join(text)


def write_results(rows: list[dict], out: Path, name: str = "bench", command: str = "", settings: dict | None = None
                  ) -> tuple[Path, Path]:
    """Write ``{name}.csv`` (the rows) and ``{name}.json`` (command, settings, machine, rows, speed-ups)."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / f"{name}.csv", out / f"{name}.json"
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    record = {"command": command, "settings": settings or {}, "machine": machine(), "rows": rows,
              "speedups": all_speedups(rows)}
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return csv_path, json_path



def training_step_seconds(model: nn.Module, loader, steps: int = 20, warmup: int = 3, lr: float = 0.01) -> float:
    """Median wall time of one SGD training step (forward, cross-entropy or MSE, backward, update).

    Runs on a copy so ``model`` is not changed. Used to compare a branched model's cost with the original's.
    """
    import statistics
    import time

    from ..engine.train import make_optimizer

    work = copy.deepcopy(model).train()
    optimizer = make_optimizer("sgd", [p for p in work.parameters() if p.requires_grad], lr)
    times = []
    batches = iter(loader)
    for i in range(warmup + steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        start = time.perf_counter()
        out = work(x)
        loss = (torch.nn.functional.cross_entropy(out, y) if y.dtype == torch.long
                else torch.nn.functional.mse_loss(out, y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if out.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pruning_utils.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg16", "autoencoder"], choices=sorted(MODELS))
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier of the models (default 1.0)")
    p.add_argument("--keep-ratio", type=float, default=0.59,
                   help="keep ratio r in (0, 1] of every pruned unit (default 0.59: about 35%% of VGG16's parameters)")
    p.add_argument("--ae-part", default="encoder", choices=sorted(AE_PARTS),
                   help="autoencoder units pruned (default encoder)")
    p.add_argument("--channel-multiple", type=int, default=1, help="round kept channels to a multiple of this, e.g. 8")
    p.add_argument("--fuse-bn", action="store_true",
                   help="fuse BatchNorm into the original's and the folded network's layers")
    p.add_argument("--channels-last", action="store_true", help="run every variant in the channels_last memory format")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default 1 8 32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every timing (default: torch's current)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: CPU, and CUDA where present (default)")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of measurement per timing run (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="timing runs per case; their median is reported (default 1)")
    p.add_argument("--no-ram", action="store_true", help="skip the peak-RAM subprocesses")
    p.add_argument("--by-operator", action="store_true",
                   help="also profile one CPU forward by operator group (column cpu_ms_by_operator)")
    p.add_argument("--checkpoint", type=Path, help="baseline checkpoint for the original (one model only)")
    p.add_argument("--folded-file", type=Path, help="a save_plain file to use as the folded variant (one model only)")
    p.add_argument("--out", type=Path, default=RUNS_DIR / "bench",
                   help=f"folder for the CSV and JSON (default {RUNS_DIR / 'bench'})")
    p.add_argument("--name", default="bench", help="file stem of the CSV and JSON (default bench)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cli = parser()
    args = cli.parse_args(argv)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "name")}
    settings["threads"] = args.threads or torch.get_num_threads()
    try:
        check_settings(args.models, keep_ratio=args.keep_ratio, batch_sizes=args.batch_sizes, threads=args.threads,
                       min_run_time=args.min_run_time, repeats=args.repeats, ae_part=args.ae_part,
                       one_model_file=bool(args.checkpoint or args.folded_file))
        resolve_devices(args.device)
    except ValueError as err:
        cli.error(str(err))
    rows = run(args.models, width=args.width, keep_ratio=args.keep_ratio, ae_part=args.ae_part,
               batch_sizes=args.batch_sizes, threads=settings["threads"], min_run_time=args.min_run_time,
               channel_multiple=args.channel_multiple, device=args.device, ram=not args.no_ram, fuse_bn=args.fuse_bn,
               channels_last=args.channels_last, repeats=args.repeats, checkpoint=args.checkpoint,
               folded_file=args.folded_file, by_operator=args.by_operator)
    print(format_report(rows))
    command = shlex.join(["python", "-m", "pruning_utils.bench", *argv])
    for path in write_results(rows, args.out, args.name, command, settings):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
