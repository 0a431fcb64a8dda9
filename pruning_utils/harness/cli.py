"""Baseline and pruning of VGG16 from a shell, in one process or several under torchrun.

    python -m pruning_utils.cli --data ../shared/data/cifar10_subset.npz --width 0.25 --out runs/prune.json
    torchrun --nproc_per_node 2 -m pruning_utils.cli --data embedded --width 0.125 --out runs/prune_ddp.json
    python -m pruning_utils.cli --profile full --data ../shared/data/cifar10_subset.npz --out runs/full.json

Trains (or loads) the baseline, prunes it with the default recipe (:class:`~pruning_utils.Recipe`, the
winner of notebook 08's ablation study; ``--ramp-epochs``, ``--final-epochs``, ``--lr`` and ``--loss`` change it),
folds it, and writes the metrics JSON and the folded network (``.plain.pt`` beside the JSON, loadable with
:func:`pruning_utils.load_plain`). Under torchrun every rank trains on its share of each batch (DDP); only
rank 0 writes files and prints. Options left out take the ``--profile``'s values (``quick``: embedded data, CPU
minutes; ``full``: VGG16 width 1, 100 baseline and 40 pruning epochs, for a GPU). On CUDA, channels_last and bf16
autocast are on unless ``--no-channels-last`` / ``--no-bf16``; ``--compile`` adds torch.compile
(:class:`~pruning_utils.engine.speed.Speed`). The JSON records the wall time of the baseline's training and of the pruning.

The baseline (one checkpoint per setting and data content) and the pruning (a stage checkpoint per stage, in a
folder named by the run's settings beside ``data/checkpoints/cli``) resume after an interruption; a run that ends
without a trained alpha = 0 epoch writes its record with ``"status": "failed"`` and exits with status 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from ..config import CHECKPOINT_DIR, PROFILES, get_profile, pick, resolve_path, seed_everything
from ..engine import distributed
from ..engine.data import EMBEDDED, load_classification
from ..engine.identity import fingerprint
from ..engine.speed import Speed
from ..engine.tasks import CLASSIFICATION
from ..engine.train import evaluate
from ..method.budget import keep_ratio_for_fraction
from ..method.folding import save_plain
from ..method.pipeline import prune_and_fold
from ..method.pruning import PruningFailedError
from ..method.recipe import Recipe
from .pretrained import vgg_baseline
from .records import write_record


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                   help="defaults of the size options left out (pruning_utils.config.PROFILES)")
    p.add_argument("--data", help="'embedded', a CIFAR-10 .npz, folder or image folder (default: the profile's)")
    p.add_argument("--width", type=float, help="VGG16 channel multiplier (default: the profile's)")
    p.add_argument("--baseline-epochs", type=int, help="(default: the profile's)")
    p.add_argument("--batch-size", type=int, help="global batch size, shared by the ranks (default: the profile's)")
    p.add_argument("--baseline-lr", type=float, help="peak one-cycle learning rate (default: the profile's)")
    p.add_argument("--param-fraction", type=float, default=0.35, help="parameters the folded model keeps")
    p.add_argument("--ramp-epochs", type=int,
                   help="epochs of the alpha ramp from 1 to 0 (default: a quarter of the profile's pruning epochs)")
    p.add_argument("--final-epochs", type=int, help="epochs at alpha 0 afterwards (default: the rest of them)")
    p.add_argument("--lr", type=float, default=Recipe().lr, help="peak one-cycle learning rate while pruning")
    p.add_argument("--loss", default=Recipe().for_task(CLASSIFICATION).loss, choices=CLASSIFICATION.pruning_losses)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start the pruning afresh instead of resuming its stage checkpoints")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="NHWC weights and batches (default: on with CUDA)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="bfloat16 autocast of the forward and the loss (default: on with CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="metrics JSON to write (the folded model goes beside it)")
    p.add_argument("--progress", action="store_true", help="progress bars (rank 0)")
    return p


def with_profile_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the size options left out from ``args.profile``; the ramp takes a quarter of its pruning epochs."""
    profile = get_profile(args.profile)
    args.data = pick(args.data, profile.classification_source)
    args.width = pick(args.width, profile.vgg_width)
    args.baseline_epochs = pick(args.baseline_epochs, profile.vgg_epochs)
    args.batch_size = pick(args.batch_size, profile.batch_size)
    args.baseline_lr = pick(args.baseline_lr, profile.lr)
    args.ramp_epochs = pick(args.ramp_epochs, max(1, profile.prune_epochs // 4))
    args.final_epochs = pick(args.final_epochs, profile.prune_epochs - args.ramp_epochs)
    return args


def device_name(device) -> str:
    """The accelerator's name, or the CPU's architecture."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"


def main(argv: list[str] | None = None) -> int:
    args = with_profile_defaults(parser().parse_args(argv))
    if not 0 < args.param_fraction < 1:
        parser().error(f"--param-fraction must be in (0, 1), got {args.param_fraction}")
    recipe = Recipe().with_changes(ramp_epochs=args.ramp_epochs, loss=args.loss, lr=args.lr)
    epochs = args.ramp_epochs + args.final_epochs
    try:
        recipe.check(epochs, CLASSIFICATION)
    except ValueError as err:
        parser().error(str(err))
    device = distributed.setup()
    speed = Speed.for_device(device, args.channels_last, args.bf16, args.compile)
    try:
        return _run(args, recipe, epochs, device, speed, argv)
    finally:
        distributed.cleanup()


def _run(args: argparse.Namespace, recipe: Recipe, epochs: int, device, speed: Speed, argv) -> int:
    seed_everything(args.seed)
    source = args.data if args.data == EMBEDDED else str(resolve_path(args.data))
    images = load_classification(source, seed=args.seed)
    loaders = images.loaders(args.batch_size, device=device, seed=args.seed)
    world = distributed.world_size()
    baseline, baseline_history, baseline_path = vgg_baseline(
        images, width=args.width, epochs=args.baseline_epochs, batch_size=args.batch_size, lr=args.baseline_lr,
        seed=args.seed, device=device, progress=args.progress, speed=speed)
    baseline_val = evaluate(baseline, loaders[1], CLASSIFICATION, speed)["acc"]  # before pruning can touch it
    keep_ratio = keep_ratio_for_fraction(baseline, args.param_fraction)
    run_key = fingerprint(baseline_path.name, keep_ratio, dataclasses.asdict(recipe), epochs, args.seed, world)
    metrics = {"world_size": world, "device": str(device), "device_name": device_name(device),
               "keep_ratio": keep_ratio, "recipe": dataclasses.asdict(recipe), "speed": dataclasses.asdict(speed),
               "baseline_checkpoint": str(baseline_path), "baseline_val_acc": baseline_val,
               "baseline_seconds": sum(h["seconds"] for h in baseline_history)}  # its epochs, also when resumed
    start = time.perf_counter()
    try:
        result = prune_and_fold(baseline, keep_ratio, loaders, recipe=recipe, epochs=epochs, task=CLASSIFICATION,
                                input_shape=tuple(images.x_train.shape[1:]), progress=args.progress, speed=speed,
                                checkpoint_dir=CHECKPOINT_DIR / "cli" / run_key, resume=args.resume)
    except PruningFailedError as err:
        _write(args, argv, world, {**metrics, "status": "failed", "error": str(err)})
        print(f"pruning failed: {err}", file=sys.stderr)
        return 1
    prune_seconds = time.perf_counter() - start
    metrics.update(status="completed", prune_seconds=prune_seconds,
                   total_seconds=metrics["baseline_seconds"] + prune_seconds, **result.metrics)
    out = _write(args, argv, world, metrics, folded=result.folded)
    if distributed.is_main():
        print(f"{world} process(es): validation {metrics['val_acc']:.2f}% (baseline {baseline_val:.2f}%), "
              f"{metrics['params']:,} parameters; baseline {metrics['baseline_seconds']:.0f} s + pruning "
              f"{prune_seconds:.0f} s; written to {out}")
    return 0


def _write(args: argparse.Namespace, argv, world: int, metrics: dict, folded=None) -> Path:
    """The run's record (and the folded network beside it), on rank 0."""
    out = resolve_path(args.out)
    if distributed.is_main():
        if folded is not None:
            save_plain(folded.cpu(), out.with_suffix(".plain.pt"))
        arguments = " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
        launcher = f"torchrun --nproc_per_node {world}" if world > 1 else "python"
        write_record(out, "pruning_utils.cli", vars(args) | {"out": str(args.out)}, metrics,
                     command=f"{launcher} -m pruning_utils.cli {arguments}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
