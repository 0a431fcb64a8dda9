"""Benchmark what pruning buys: ``python -m pruning_utils.bench --help``.

For each model (VGG16, the autoencoder) and variant (the original; the branched model at alpha = 0
before folding; the folded network): parameters, MACs (torch.utils.flop_counter), checkpoint bytes,
inference time per image on CPU (and on GPU where present) for several batch sizes, and memory:

* ``peak_rss_mb``: the peak resident set size (``ru_maxrss``) of a fresh Python process that imports
  torch, builds the model, loads its weights and runs one inference batch; ``rss_increase_mb`` is that
  peak minus the process's resident size right after importing torch, i.e. what the model and its
  inference added. One process per model and batch, so one model's allocations never count for another.
* ``peak_gpu_allocated_mb`` (GPU only): ``torch.cuda.max_memory_allocated`` over one inference batch,
  weights included, after resetting the peak statistics. Not utilisation, not the caching allocator's reserve.

Times come from ``torch.utils.benchmark.Timer.blocked_autorange`` after a warm-up: the median and the
interquartile range of its blocked measurements, divided by the batch size; CUDA is synchronised by the Timer.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark
from torch import nn

from .branches import attach_branches, set_alpha
from .folding import fold, fuse_batchnorm, load_plain, save_plain
from .metrics import count_macs, count_parameters
from .models import RGBAutoencoder, vgg16
from .records import machine

MODELS = {"vgg16": (3, 32, 32), "autoencoder": (3, 128, 128)}
VARIANTS = ("original", "mixed_alpha0", "folded")
AE_PARTS = {"encoder": ["encoder"], "decoder": ["decoder"], "both": None}


def _make_original(kind: str, width: float) -> nn.Module:
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose from {sorted(MODELS)}")
    return vgg16(width=width) if kind == "vgg16" else RGBAutoencoder(width=width)


def _make_mixed(original: nn.Module, kind: str, keep_ratio: float, ae_part: str, channel_multiple: int) -> nn.Module:
    include = AE_PARTS[ae_part] if kind == "autoencoder" else None
    mixed = attach_branches(copy.deepcopy(original), keep_ratio, include=include, channel_multiple=channel_multiple)
    set_alpha(mixed, 0.0)
    return mixed.eval()


def build_variants(kind: str, width: float = 1.0, keep_ratio: float = 0.59, ae_part: str = "encoder",
                   channel_multiple: int = 1, seed: int = 0, fuse_bn: bool = False) -> dict[str, nn.Module]:
    """The original (random weights, seeded), its branched copy at alpha = 0, and the folded network.

    ``fuse_bn`` fuses BatchNorm into the preceding layers of the original and the folded network alike.
    """
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}")
    if ae_part not in AE_PARTS:
        raise ValueError(f"ae_part must be one of {sorted(AE_PARTS)}, got {ae_part!r}")
    torch.manual_seed(seed)
    original = _make_original(kind, width).eval()
    mixed = _make_mixed(original, kind, keep_ratio, ae_part, channel_multiple)
    folded = fold(mixed, fuse_bn=fuse_bn).eval()
    return {"original": fuse_batchnorm(original) if fuse_bn else original, "mixed_alpha0": mixed, "folded": folded}


def time_per_image(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device,
                   threads: int, min_run_time: float, channels_last: bool = False, repeats: int = 1) -> dict[str, float]:
    """Seconds per image of eval-mode inference: the median over ``repeats`` independent
    ``blocked_autorange`` measurements of their medians, their smallest and largest, and the median IQR."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=layout).eval()
    x = torch.randn(batch_size, *input_shape, device=device).contiguous(memory_format=layout)

    def run():
        with torch.inference_mode():
            model(x)

    for _ in range(3):
        run()
    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=threads)
    measurements = [timer.blocked_autorange(min_run_time=min_run_time) for _ in range(repeats)]
    medians = sorted(m.median / batch_size for m in measurements)
    return {"s_per_image": statistics.median(medians), "min_s_per_image": medians[0], "max_s_per_image": medians[-1],
            "iqr_s_per_image": statistics.median(m.iqr for m in measurements) / batch_size, "repeats": repeats,
            "blocks": sum(len(m.times) for m in measurements)}


def checkpoint_bytes(model: nn.Module) -> int:
    """Size on disk of ``torch.save(model.state_dict())``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size


def peak_gpu_memory_mb(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> float:
    """Peak bytes allocated on the GPU during one inference batch (weights included), in MiB."""
    model = model.to("cuda").eval()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(torch.randn(batch_size, *input_shape, device="cuda"))
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def peak_ram_mb(spec: dict, model: nn.Module, batch_size: int, threads: int) -> dict[str, float]:
    """Peak RSS of a fresh process that loads ``model`` (rebuilt from ``spec``) and runs one batch on the CPU."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        if spec["variant"] == "folded":
            save_plain(model, path)
        else:
            torch.save(model.state_dict(), path)
        job = dict(spec, path=str(path), batch_size=batch_size, threads=threads)
        done = subprocess.run([sys.executable, "-m", "pruning_utils.bench", "--measure-ram", json.dumps(job)],
                              capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_ram_in_this_process(job: dict) -> dict[str, float]:
    import resource

    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    torch.set_num_threads(job["threads"])
    after_import = rss_mb()
    if job["variant"] == "folded":
        model = load_plain(job["path"])
    else:
        model = _make_original(job["kind"], job["width"]).eval()
        if job["variant"] == "mixed_alpha0":
            model = _make_mixed(model, job["kind"], job["keep_ratio"], job["ae_part"], job["channel_multiple"])
        elif job["fuse_bn"]:
            model = fuse_batchnorm(model)
        model.load_state_dict(torch.load(job["path"], weights_only=True))
    model.eval()
    with torch.inference_mode():
        model(torch.randn(job["batch_size"], *MODELS[job["kind"]]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_rss_mb": peak, "rss_increase_mb": peak - after_import}


def run(models=("vgg16", "autoencoder"), width: float = 1.0, keep_ratio: float = 0.59, ae_part: str = "encoder",
        batch_sizes=(1, 8, 32), threads: int | None = None, min_run_time: float = 1.0, channel_multiple: int = 1,
        ram: bool = True, gpu: bool | None = None, fuse_bn: bool = False, channels_last: bool = False,
        repeats: int = 1) -> list[dict]:
    """One row per model, variant and batch size (see the module docstring for what each column measures)."""
    threads = threads or torch.get_num_threads()
    gpu = torch.cuda.is_available() if gpu is None else gpu
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive, got {batch_sizes}")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    rows = []
    for kind in models:
        shape = MODELS[kind]
        variants = build_variants(kind, width, keep_ratio, ae_part, channel_multiple, fuse_bn=fuse_bn)
        for variant, model in variants.items():
            common = {"model": kind, "variant": variant, "width": width, "keep_ratio": keep_ratio,
                      "params": count_parameters(model), "macs": count_macs(model, shape),
                      "checkpoint_bytes": checkpoint_bytes(model), "threads": threads, "fuse_bn": fuse_bn,
                      "channels_last": channels_last}
            spec = {"kind": kind, "variant": variant, "width": width, "keep_ratio": keep_ratio, "ae_part": ae_part,
                    "channel_multiple": channel_multiple, "fuse_bn": fuse_bn}
            for batch in batch_sizes:
                row = dict(common, batch_size=batch,
                           **{f"cpu_{k}": v for k, v in time_per_image(model, shape, batch, torch.device("cpu"), threads,
                                                                        min_run_time, channels_last, repeats).items()})
                if gpu:
                    row.update({f"gpu_{k}": v for k, v in time_per_image(
                        model, shape, batch, torch.device("cuda"), threads, min_run_time, channels_last,
                        repeats).items()})
                    row["peak_gpu_allocated_mb"] = peak_gpu_memory_mb(model, shape, batch)
                    model.to("cpu")
                if ram and batch == max(batch_sizes):
                    row.update(peak_ram_mb(spec, model, batch, threads))
                rows.append(row)
    return rows


def speedups(rows: list[dict], device: str = "cpu") -> list[dict]:
    """Per model and batch size: the folded network's speed-up over the original, its MAC ratio, and
    their quotient (1.0: as fast as the MAC count allows)."""
    index = {(r["model"], r["variant"], r["batch_size"]): r for r in rows}
    out = []
    for (kind, variant, batch), folded in index.items():
        original = index.get((kind, "original", batch))
        if variant != "folded" or original is None or f"{device}_s_per_image" not in folded:
            continue
        speedup = original[f"{device}_s_per_image"] / folded[f"{device}_s_per_image"]
        mac_ratio = original["macs"] / folded["macs"]
        out.append({"model": kind, "device": device, "batch_size": batch, "speedup": speedup, "mac_ratio": mac_ratio,
                    "efficiency": speedup / mac_ratio, "param_ratio": original["params"] / folded["params"]})
    return out


COLUMNS = ["model", "variant", "batch_size", "params", "macs", "checkpoint_bytes", "cpu_s_per_image",
           "cpu_iqr_s_per_image", "gpu_s_per_image", "peak_rss_mb", "rss_increase_mb", "peak_gpu_allocated_mb"]


def write(rows: list[dict], out: Path, command: str) -> tuple[Path, Path]:
    """Write the rows as CSV and, with the speed-ups, the machine and the command, as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "bench.csv", out / "bench.json"
    fields = sorted({k for r in rows for k in r}, key=lambda k: (COLUMNS + [k]).index(k))
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    devices = ["cpu"] + (["gpu"] if any("gpu_s_per_image" in r for r in rows) else [])
    json_path.write_text(json.dumps({"command": command, "machine": machine(), "rows": rows,
                                     "speedups": [s for d in devices for s in speedups(rows, d)]}, indent=2) + "\n")
    return csv_path, json_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vgg16", "autoencoder"], choices=sorted(MODELS))
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of both models (default 1.0)")
    parser.add_argument("--keep-ratio", type=float, default=0.59, help="keep ratio r of every pruned unit (0.59: ~35%% of VGG16's parameters)")
    parser.add_argument("--ae-part", default="encoder", choices=sorted(AE_PARTS), help="autoencoder units to prune")
    parser.add_argument("--channel-multiple", type=int, default=1, help="round kept channels to a multiple of this")
    parser.add_argument("--fuse-bn", action="store_true", help="fuse BatchNorm into convolutions (original and folded alike)")
    parser.add_argument("--channels-last", action="store_true", help="run every variant in the channels_last memory format")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default on this machine)")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of measurement per timing")
    parser.add_argument("--repeats", type=int, default=1, help="independent timings per case; the median is reported")
    parser.add_argument("--no-ram", action="store_true", help="skip the subprocess peak-RAM measurement")
    parser.add_argument("--out", type=Path, default=None, help="folder for bench.csv and bench.json (default: print only)")
    parser.add_argument("--measure-ram", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_ram:
        print(json.dumps(_measure_ram_in_this_process(json.loads(args.measure_ram))))
        return 0
    if not 0 < args.keep_ratio <= 1:
        parser.error(f"--keep-ratio must be in (0, 1], got {args.keep_ratio}")
    rows = run(args.models, args.width, args.keep_ratio, args.ae_part, args.batch_sizes, args.threads,
               args.min_run_time, args.channel_multiple, ram=not args.no_ram, fuse_bn=args.fuse_bn,
               channels_last=args.channels_last, repeats=args.repeats)
    print(format_rows(rows))
    if args.out:
        command = "python -m pruning_utils.bench " + " ".join(argv if argv is not None else sys.argv[1:])
        for path in write(rows, args.out, command):
            print("wrote", path)
    return 0


def format_rows(rows: list[dict]) -> str:
    """The table and the speed-up lines as text."""
    from .records import format_table

    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    formats = {"params": ",", "macs": ",", "checkpoint_bytes": ",", "cpu_s_per_image": ".3e", "cpu_iqr_s_per_image": ".1e",
               "gpu_s_per_image": ".3e", "peak_rss_mb": ".0f", "rss_increase_mb": ".0f", "peak_gpu_allocated_mb": ".1f"}
    lines = [format_table(rows, columns, formats), ""]
    for device in ("cpu", "gpu"):
        for s in speedups(rows, device):
            lines.append(f"{s['model']} batch {s['batch_size']} on {device}: folded is {s['speedup']:.2f}x faster, "
                         f"{s['mac_ratio']:.2f}x fewer MACs, efficiency {s['efficiency']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
