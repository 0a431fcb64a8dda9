"""Train-or-load helpers for the baseline models, so every notebook also runs on its own."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import CHECKPOINT_DIR, get_device, seed_everything
from ..engine.data import BatchLoader, ImageSplits, PhotoSplits
from ..engine.distributed import world_size
from ..engine.identity import fingerprint
from ..engine.gan import LatentLoader, train_gan
from ..engine.models import (RGBAutoencoder, SkipAutoencoder, dcgan_discriminator, dcgan_generator, resnet_cifar,
                             vgg16)
from ..engine.speed import PLAIN, Speed
from ..engine.train import fit
from ..method.pruning import recalibrate_batchnorm
from .records import slug


def data_identity(data: ImageSplits | PhotoSplits) -> dict:
    """The source and a fingerprint of the images a baseline trains and is validated on."""
    if isinstance(data, ImageSplits):
        content = fingerprint(data.x_train, data.y_train, data.x_val, data.y_val)
    else:
        content = fingerprint(data.train_photos, data.val_crops)
    return {"source": str(data.source), "fingerprint": content}


def baseline_checkpoint_path(kind: str, data: ImageSplits | PhotoSplits, width: float, epochs: int, seed: int,
                             **settings) -> Path:
    """Where a baseline with these settings is stored: one file per distinct setting and data content."""
    if world_size() > 1:  # BatchNorm statistics are per rank: another number of processes trains another model
        settings["ranks"] = world_size()
    extra = "".join(f"_{k}{v}" for k, v in sorted(settings.items()))
    identity = data_identity(data)
    name = f"{slug(Path(identity['source']).stem) or 'data'}-{identity['fingerprint']}"
    return CHECKPOINT_DIR / f"{kind}_{name}_w{width:g}_e{epochs}_s{seed}{extra}.pt"


def vgg_baseline(data: ImageSplits, *, width: float, epochs: int, batch_size: int = 128, lr: float = 0.05,
                 weight_decay: float = 5e-4, classifier: str = "linear", seed: int = 0, device=None,
                 progress: bool = True, checkpoint: str | Path | None = None,
                 speed: Speed = PLAIN) -> tuple[nn.Module, list[dict], Path]:
    """Train VGG16-BN on ``data`` (SGD with Nesterov momentum, one-cycle schedule), or load it when trained.

    The checkpoint is resumed if a run was interrupted. ``speed``: see :class:`~pruning_utils.engine.speed.Speed`.
    Returns the model (on ``device``), the per-epoch history and the checkpoint path.
    """
    path = Path(checkpoint) if checkpoint else baseline_checkpoint_path(
        "vgg16", data, width, epochs, seed, c=classifier, b=batch_size, lr=lr, wd=weight_decay)
    seed_everything(seed)
    model = vgg16(data.num_classes, width=width, classifier=classifier)
    meta = {"model": "vgg16", "width": width, "classifier": classifier}
    return _train_classifier(model, data, path, meta, epochs=epochs, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, seed=seed, device=device, progress=progress, speed=speed)


def resnet_baseline(data: ImageSplits, *, depth: int, width: float, epochs: int, batch_size: int = 128,
                    lr: float = 0.05, weight_decay: float = 5e-4, seed: int = 0, device=None, progress: bool = True,
                    checkpoint: str | Path | None = None, speed: Speed = PLAIN) -> tuple[nn.Module, list[dict], Path]:
    """Train the CIFAR ResNet (:func:`~pruning_utils.engine.models.resnet_cifar`) as :func:`vgg_baseline` does."""
    path = Path(checkpoint) if checkpoint else baseline_checkpoint_path(
        f"resnet{depth}", data, width, epochs, seed, b=batch_size, lr=lr, wd=weight_decay)
    seed_everything(seed)
    model = resnet_cifar(depth, data.num_classes, width=width)
    meta = {"model": f"resnet{depth}", "width": width}
    return _train_classifier(model, data, path, meta, epochs=epochs, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, seed=seed, device=device, progress=progress, speed=speed)


def _train_classifier(model: nn.Module, data: ImageSplits, path: Path, meta: dict, *, epochs: int, batch_size: int,
                      lr: float, weight_decay: float, seed: int, device, progress: bool,
                      speed: Speed) -> tuple[nn.Module, list[dict], Path]:
    device = get_device(device)
    model = model.to(device)
    train, val, _ = data.loaders(batch_size, device=device, seed=seed)
    meta = {**meta, "num_classes": data.num_classes, "batch_size": batch_size, "seed": seed,
            "data": data_identity(data)}
    history = fit(model, train, val, task="classification", epochs=epochs, lr=lr, weight_decay=weight_decay,
                  scheduler="onecycle", checkpoint=path, meta=meta, progress=progress, speed=speed)
    return model, history, path


def autoencoder_baseline(data: PhotoSplits, *, width: float, epochs: int, batch_size: int = 16,
                         crops_per_photo: int = 8, lr: float = 1e-3, bottleneck: int = 128, skips: bool = False,
                         seed: int = 0, device=None, progress: bool = True, checkpoint: str | Path | None = None,
                         speed: Speed = PLAIN) -> tuple[nn.Module, list[dict], Path]:
    """Train :class:`RGBAutoencoder` (``skips``: :class:`SkipAutoencoder`) on photo crops (Adam, one-cycle
    schedule), or load it when trained.

    ``speed``: see :class:`~pruning_utils.engine.speed.Speed`."""
    device = get_device(device)
    kind = "skip_autoencoder" if skips else "autoencoder"
    path = Path(checkpoint) if checkpoint else baseline_checkpoint_path(
        kind, data, width, epochs, seed, z=bottleneck, b=batch_size, n=crops_per_photo, lr=lr)
    seed_everything(seed)
    model = (SkipAutoencoder if skips else RGBAutoencoder)(width=width, bottleneck=bottleneck).to(device)
    train, val, _ = data.loaders(batch_size, crops_per_photo, device=device, seed=seed)
    meta = {"model": kind, "width": width, "bottleneck": bottleneck, "batch_size": batch_size,
            "crops_per_photo": crops_per_photo, "seed": seed, "data": data_identity(data)}
    history = fit(model, train, val, task="reconstruction", epochs=epochs, lr=lr, optimizer="adam",
                  weight_decay=0.0, scheduler="onecycle", checkpoint=path, meta=meta, progress=progress,
                  speed=speed)
    return model, history, path


def dcgan_baseline(data: ImageSplits, *, width: float, epochs: int, latent_dim: int = 100, batch_size: int = 64,
                   lr: float = 2e-4, seed: int = 0, device=None, progress: bool = True,
                   checkpoint: str | Path | None = None,
                   bn_batches: int = 50) -> tuple[nn.Module, nn.Module, list[dict], Path]:
    """Train a DCGAN (:func:`~pruning_utils.engine.models.dcgan_generator` and ``dcgan_discriminator``) on the
    training images of ``data`` (labels unused, no augmentation), or load it when trained.

    Afterwards the generator's BatchNorm statistics are re-estimated from ``bn_batches`` batches of random codes, so
    that it generates in eval mode as it trained. Returns the generator and the discriminator (eval mode, on
    ``device``), the per-epoch history and the checkpoint path.
    """
    device = get_device(device)
    path = Path(checkpoint) if checkpoint else baseline_checkpoint_path(
        "dcgan", data, width, epochs, seed, z=latent_dim, b=batch_size, lr=lr)
    seed_everything(seed)
    generator, discriminator = dcgan_generator(latent_dim, width).to(device), dcgan_discriminator(width).to(device)
    real = BatchLoader(data.x_train, None, batch_size, shuffle=True, seed=seed, device=device)
    meta = {"model": "dcgan", "width": width, "batch_size": batch_size, "seed": seed, "data": data_identity(data)}
    history = train_gan(generator, discriminator, real, latent_dim=latent_dim, epochs=epochs, lr=lr, seed=seed,
                        checkpoint=path, meta=meta, progress=progress)
    recalibrate_batchnorm(generator, LatentLoader(latent_dim, bn_batches * batch_size, batch_size, seed=seed + 1,
                                                  device=device), bn_batches)
    return generator.eval(), discriminator.eval(), history, path


def seconds_per_epoch(history: list[dict]) -> float:
    """Median wall time of the epochs in ``history``."""
    return float(torch.tensor([h["seconds"] for h in history]).median()) if history else float("nan")
