"""The autoencoder experiments of notebooks 03, 04 and 10: shared set-up, pruning of a part, SSIM, reconstructions."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from skimage.metrics import structural_similarity
from torch import nn

from ..config import Profile, pick, resolve_path
from ..engine.data import EMBEDDED, PhotoSplits, load_photos
from ..engine.sizes import count_macs, count_parameters
from ..engine.tasks import RECONSTRUCTION
from ..engine.train import evaluate
from ..harness.pretrained import autoencoder_baseline
from ..method.pipeline import PruningResult, prune_and_fold, stage_outputs
from ..method.recipe import Recipe

INPUT_SHAPE = (3, 128, 128)
PARTS = ("encoder", "decoder", "both")
ORDERS = {"decoder": ("decoder",), "encoder_then_decoder": ("encoder", "decoder"), "both": ("both",)}  # their phases
# The autoencoder's recipe: the best one (pruning_utils.Recipe) with the optimiser its baseline trains with (Adam at
# 1e-3, no weight decay) and the reconstruction loss (the task's own).
RECIPE = Recipe(optimizer="adam", lr=1e-3, weight_decay=0.0)


@dataclass
class AutoencoderSetup:
    """Photos, loaders, the trained baseline and its metrics, and a few validation crops to show."""

    photos: PhotoSplits
    loaders: tuple
    baseline: nn.Module
    baseline_metrics: dict
    sample_images: torch.Tensor
    progress: bool


def setup(profile: Profile, photo_source=None, width=None, epochs=None, batch_size=None, lr=None,
          crops_per_photo=None, seed: int = 0, device=None, progress: bool = True, samples: int = 4,
          skips: bool = False) -> AutoencoderSetup:
    """Load the photos and train (or load) the baseline autoencoder (``skips``: the
    :class:`~pruning_utils.engine.models.SkipAutoencoder`) with the profile's defaults for ``None``."""
    source = pick(photo_source, profile.photo_source)
    photos = load_photos(source if source == EMBEDDED else str(resolve_path(source)), seed=seed)
    batch_size = pick(batch_size, profile.ae_batch_size)
    crops = pick(crops_per_photo, profile.crops_per_photo)
    baseline, history, _ = autoencoder_baseline(
        photos, width=pick(width, profile.ae_width), epochs=pick(epochs, profile.ae_epochs), batch_size=batch_size,
        crops_per_photo=crops, lr=pick(lr, profile.ae_lr), skips=skips, seed=seed, device=device, progress=progress)
    loaders = photos.loaders(batch_size, crops, device=device, seed=seed)
    test = evaluate(baseline, loaders[2], RECONSTRUCTION)
    metrics = {"val_loss": history[-1]["val_loss"], "val_psnr": history[-1]["val_psnr"], "test_loss": test["loss"],
               "test_psnr": test["psnr"], "params": count_parameters(baseline),
               "macs": count_macs(baseline, INPUT_SHAPE), "epochs": len(history),
               "train_seconds": sum(h["seconds"] for h in history)}
    sample = photos.val_crops[:samples].float().div(255)
    return AutoencoderSetup(photos, loaders, baseline, metrics, sample, progress)


def prune_part(ae: AutoencoderSetup, part: str, *, keep_ratio: float, recipe: Recipe = RECIPE, epochs: int,
               checkpoint_dir: str | Path, resume: bool = True, model: nn.Module | None = None) -> PruningResult:
    """Prune the ``part`` ("encoder", "decoder" or "both") of ``model`` (default: the baseline) for ``epochs`` with
    ``recipe`` and fold it; stage checkpoints go to ``checkpoint_dir / part``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return prune_and_fold(model if model is not None else ae.baseline, keep_ratio, ae.loaders, recipe=recipe,
                          epochs=epochs, task=RECONSTRUCTION, input_shape=INPUT_SHAPE,
                          include=None if part == "both" else [part], checkpoint_dir=Path(checkpoint_dir) / part,
                          resume=resume, progress=ae.progress)


def check_orders(orders, epochs: int) -> None:
    """A ValueError naming what does not fit: an order not in :data:`ORDERS`, or ``epochs`` that do not split
    evenly over an order's phases."""
    unknown = sorted(set(orders) - set(ORDERS))
    if unknown:
        raise ValueError(f"unknown orders {unknown}; choose from {list(ORDERS)}")
    uneven = [o for o in orders if epochs % len(ORDERS[o])]
    if uneven:
        raise ValueError(f"{epochs} epochs do not split evenly over the phases of {uneven}: choose an even number")


def prune_order(ae: AutoencoderSetup, order: str, *, keep_ratio: float, recipe: Recipe = RECIPE, epochs: int,
                checkpoint_dir: str | Path, resume: bool = True) -> PruningResult:
    """Prune the baseline in one of the :data:`ORDERS` with ``epochs`` in all, split evenly over its phases (each
    phase folds before the next starts); the result's metrics and history cover every phase (the history's
    ``stage`` numbers of phase p start at 100·p), ``phases`` holds each phase's metrics."""
    check_orders([order], epochs)
    phases = ORDERS[order]
    model, results = ae.baseline, []
    for part in phases:
        results.append(prune_part(ae, part, keep_ratio=keep_ratio, recipe=recipe, epochs=epochs // len(phases),
                                  checkpoint_dir=Path(checkpoint_dir) / order if len(phases) > 1 else checkpoint_dir,
                                  resume=resume, model=model))
        model = results[-1].folded
    if len(results) == 1:
        return results[0]
    history, done = [], 0
    for p, result in enumerate(results):
        history += [dict(h, epoch=h["epoch"] + done, stage=h["stage"] + 100 * p) for h in result.history]
        done += len(result.history)
    last = results[-1]
    metrics = dict(last.metrics, epochs=sum(r.metrics["epochs"] for r in results),
                   train_seconds=sum(r.metrics["train_seconds"] for r in results),
                   phases={part: r.metrics for part, r in zip(phases, results)})
    return dataclasses.replace(last, metrics=metrics, history=history)


@torch.inference_mode()
def mean_ssim(model: nn.Module, loader) -> float:
    """Mean SSIM (scikit-image's ``structural_similarity``, Gaussian weights as Wang et al., data range 1) of the
    model's reconstructions against the images of ``loader`` (eval mode)."""
    model.eval()
    scores = []
    for x, y in loader:
        out = model(x).float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        target = y.float().permute(0, 2, 3, 1).cpu().numpy()
        scores += [structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False) for a, b in zip(out, target)]
    return float(sum(scores) / len(scores))


@torch.inference_mode()
def reconstruction_rows(ae: AutoencoderSetup, result: PruningResult, intermediate: int = 3) -> dict[str, torch.Tensor]:
    """Rows for a reconstruction figure: originals, the baseline, then
    :func:`~pruning_utils.method.pipeline.stage_outputs` (up to ``intermediate`` stages with 0 < alpha < 1, the
    pruned model at alpha 0, the folded network)."""
    device = next(ae.baseline.parameters()).device
    images = ae.sample_images.to(device)
    return {"original": ae.sample_images, "baseline": ae.baseline.eval()(images).cpu(),
            **stage_outputs(result, images, intermediate)}
