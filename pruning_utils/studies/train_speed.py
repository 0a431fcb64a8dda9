"""Training speed of the branched (mixed) model under the loops' speed options, against the plain loop.

    python -m pruning_utils.train_speed --width 0.25 --alpha 0.5 --batch-size 128 --repeats 5

The model is VGG16-BN with branches attached at ``--keep-ratio`` and alpha fixed (0.5: both paths run, the most
expensive phase of pruning; 0: the branch alone), or, with ``--moving-alpha``, a new alpha in (0, 1) before every
training step, as in a ramp (where a compiled model must not compile again per value). Each option (:data:`OPTIONS`, a
:class:`~pruning_utils.engine.speed.Speed`) gets its own copy of the model, prepared once and warmed up (torch.compile
compiles there); then the options take turns, ``--repeats`` rounds of ``--steps`` SGD steps of the real training
loop (:func:`~pruning_utils.engine.train.train_epoch`) and ``--steps`` evaluation batches (:func:`~pruning_utils.engine.train.
evaluate`, under ``torch.inference_mode``) on random data. Reported: images per second, the median over the
rounds (with the slowest and fastest round), and the ratio to ``plain`` measured in the same run.
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RUNS_DIR, get_device, seed_everything
from ..engine.models import vgg16
from ..engine.speed import Speed
from ..engine.train import evaluate, make_optimizer, train_epoch
from ..harness.records import format_table, machine
from ..engine.sizes import count_macs
from ..method.branches import attach_branches, branched_units, set_alpha

OPTIONS = {"plain": Speed(), "channels_last": Speed(channels_last=True), "bf16": Speed(bf16=True),
           "compile": Speed(compile=True), "channels_last+compile": Speed(channels_last=True, compile=True),
           "all": Speed(channels_last=True, bf16=True, compile=True)}


def mixed_vgg(width: float = 0.25, keep_ratio: float = 0.59, alpha: float = 0.5, seed: int = 0,
              branch_kind: str = "conv") -> nn.Module:
    """VGG16-BN (10 classes) with L1 warm-start branches of ``branch_kind`` at ``keep_ratio`` on every unit, alpha
    fixed."""
    seed_everything(seed)
    model = attach_branches(vgg16(10, width=width), keep_ratio, init="l1", branch_kind=branch_kind)
    set_alpha(model, alpha)
    return model


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cross_entropy(model, x, y):
    out = model(x)
    return F.cross_entropy(out.float(), y), out


def alpha_mover(model: nn.Module, seed: int = 0):
    """A ``before_step`` that gives ``model`` a new alpha drawn in [0.05, 0.95] at every call."""
    generator = torch.Generator().manual_seed(seed)
    return lambda: set_alpha(model, 0.05 + 0.9 * torch.rand((), generator=generator).item())


def time_steps(model: nn.Module, batches: list, speed: Speed, device: torch.device,
               moving_alpha: bool = False) -> dict[str, float]:
    """Images per second of one pass of training steps and one of evaluation over ``batches``."""
    opt = make_optimizer("sgd", model.parameters(), 0.01, 0.9, 5e-4)
    images = sum(len(x) for x, _ in batches)
    before_step = alpha_mover(model) if moving_alpha else None
    _synchronize(device)
    start = time.perf_counter()
    train_epoch(model, batches, opt, _cross_entropy, before_step=before_step, progress=False, speed=speed)
    _synchronize(device)
    middle = time.perf_counter()
    evaluate(model, batches, "classification", speed)
    _synchronize(device)
    end = time.perf_counter()
    return {"train_images_per_s": images / (middle - start), "eval_images_per_s": images / (end - middle)}


def measure(options=tuple(OPTIONS), width: float = 0.25, keep_ratio: float = 0.59, alpha: float = 0.5,
            batch_size: int = 128, steps: int = 10, repeats: int = 5, device=None, threads: int | None = None,
            warmup: int = 3, moving_alpha: bool = False, references: bool = False) -> list[dict]:
    """One row per option: median, slowest and fastest round of training and evaluation images per second, and
    their ratios to ``plain`` (which is always measured). ``moving_alpha``: see the module's docstring.

    ``references`` adds three rows measured in the same rounds: ``original``, the unbranched VGG16, ``plain_apart``,
    the mixed model with each unit and its branch run as two convolutions (``fuse_paths = False``), and
    ``plain_projection``, the mixed model with the seeds' projection branches (``branch_kind="projection"``: the
    unit's convolution once, a 1x1 projection to k channels, the branch's post-ops and E); every row then
    has ``time_vs_original`` (its training step time over the original's) and ``mac_ratio`` (its MACs per image
    over the original's: 1 + the branches' share)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown}; choose from {list(OPTIONS)}")
    if min(steps, repeats, warmup, batch_size) < 1:
        raise ValueError("steps, repeats, warmup and batch_size must be at least 1")
    device = get_device(device)
    if threads:
        torch.set_num_threads(threads)
    base = mixed_vgg(width, keep_ratio, alpha).to(device)
    variants = {name: (base, OPTIONS[name]) for name in ["plain", *[o for o in options if o != "plain"]]}
    if references:
        apart = copy.deepcopy(base)
        for unit in branched_units(apart).values():
            unit.fuse_paths = False
        projection = mixed_vgg(width, keep_ratio, alpha, branch_kind="projection").to(device)
        variants |= {"plain_apart": (apart, Speed()), "plain_projection": (projection, Speed()),
                     "original": (vgg16(10, width=width).to(device), Speed())}
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch_size, 3, 32, 32, generator=generator).to(device),
                torch.randint(0, 10, (batch_size,), generator=generator).to(device)) for _ in range(steps)]
    models = {}
    for name, (model, speed) in variants.items():
        models[name] = speed.prepare(copy.deepcopy(model))
        time_steps(models[name], batches[:warmup], speed, device, moving_alpha and name != "original")  # warm-up
    rounds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (_, speed) in variants.items():  # interleaved, so drifts of the machine touch every option alike
            rounds[name].append(time_steps(models[name], batches, speed, device, moving_alpha and name != "original"))
    rows = []
    for name, (model, speed) in variants.items():
        row = {"option": name, **vars(speed)}
        for key in ("train_images_per_s", "eval_images_per_s"):
            values = [r[key] for r in rounds[name]]
            row |= {key: statistics.median(values), f"min_{key}": min(values), f"max_{key}": max(values)}
        if references:
            row["macs"] = count_macs(model.cpu(), (3, 32, 32))
        rows.append(row)
    for row in rows:
        for key in ("train", "eval"):
            row[f"{key}_ratio"] = row[f"{key}_images_per_s"] / rows[0][f"{key}_images_per_s"]
        if references:  # the original is the last row
            row["time_vs_original"] = rows[-1]["train_images_per_s"] / row["train_images_per_s"]
            row["mac_ratio"] = row["macs"] / rows[-1]["macs"]
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pruning_utils.train_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    p.add_argument("--width", type=float, default=0.25, help="VGG16 channel multiplier (default 0.25)")
    p.add_argument("--keep-ratio", type=float, default=0.59, help="keep ratio of every unit (default 0.59)")
    p.add_argument("--alpha", type=float, default=0.5, help="fixed alpha (default 0.5: both paths run)")
    p.add_argument("--moving-alpha", action="store_true", help="a new alpha in (0, 1) before every training step")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="training steps and evaluation batches per round")
    p.add_argument("--repeats", type=int, default=5, help="rounds per option; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's current)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: CUDA when present)")
    p.add_argument("--references", action="store_true",
                   help="also time the unbranched original, the mixed model with its paths apart and the mixed "
                        "model with projection branches")
    p.add_argument("--out", type=Path, default=RUNS_DIR / "train_speed.json", help="JSON to write")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    try:
        rows = measure(args.options, args.width, args.keep_ratio, args.alpha, args.batch_size, args.steps,
                       args.repeats, args.device, args.threads, moving_alpha=args.moving_alpha,
                       references=args.references)
    except ValueError as err:
        parser().error(str(err))
    columns = ["option", "train_images_per_s", "train_ratio", "eval_images_per_s", "eval_ratio"]
    print(format_table(rows, columns + (["time_vs_original", "mac_ratio"] if args.references else []),
                       {"train_images_per_s": ".1f", "train_ratio": ".2f", "eval_images_per_s": ".1f",
                        "eval_ratio": ".2f", "time_vs_original": ".2f", "mac_ratio": ".2f"}))
    record = {"command": shlex.join(["python", "-m", "pruning_utils.train_speed", *argv]),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "threads": torch.get_num_threads(), "machine": machine(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
