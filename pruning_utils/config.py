"""Paths, run profiles, device choice and seeding: the one place for project-wide settings.

Paths resolve from the package, never from the working directory, because papermill and nbval
run notebooks from different folders. Set ``PRUNING_UTILS_HOME`` to move them elsewhere.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .engine.distributed import is_main

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = Path(os.environ.get("PRUNING_UTILS_HOME", PACKAGE_DIR.parent)).resolve()
DATA_DIR = REPO_ROOT / "data"
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
FIGURES_DIR = REPO_ROOT / "figures"
QUICK_FIGURES_DIR = FIGURES_DIR / "quick"
RUNS_DIR = REPO_ROOT / "runs"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Profile:
    """Default sizes of a run; every notebook parameter left as ``None`` takes its value here."""

    name: str
    classification_source: str
    photo_source: str
    vgg_width: float
    vgg_epochs: int
    resnet_width: float
    resnet_epochs: int
    ae_width: float
    ae_epochs: int
    gan_width: float
    gan_epochs: int
    batch_size: int
    ae_batch_size: int
    lr: float
    ae_lr: float
    prune_epochs: int
    crops_per_photo: int
    notes: str = ""


PROFILES = {profile.name: profile for profile in (
    Profile("quick", classification_source="embedded", photo_source="embedded", vgg_width=0.125, vgg_epochs=3,
            resnet_width=0.25, resnet_epochs=2, ae_width=0.125, ae_epochs=4, gan_width=0.125, gan_epochs=2,
            batch_size=64, ae_batch_size=16, lr=0.05, ae_lr=3e-3, prune_epochs=2, crops_per_photo=16,
            notes="smoke scale on data shipped with scikit-learn and scikit-image; minutes on 2 CPU cores"),
    Profile("full", classification_source=str(DATA_DIR / "cifar10"), photo_source=str(DATA_DIR / "photos"),
            vgg_width=1.0, vgg_epochs=100, resnet_width=1.0, resnet_epochs=100, ae_width=1.0, ae_epochs=100,
            gan_width=1.0, gan_epochs=25,
            batch_size=128, ae_batch_size=32, lr=0.05, ae_lr=1e-3, prune_epochs=40, crops_per_photo=16,
            notes="the seeds' scale: full CIFAR-10 and a photo folder; meant for a GPU"),
)}


def get_profile(name: str) -> Profile:
    """Return the named profile, or raise a ValueError listing the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def pick(value, default):
    """``value`` unless it is None, else ``default`` (notebook parameters use None for 'profile default')."""
    return default if value is None else value


def resolve_path(path: str | Path) -> Path:
    """An absolute path; a relative one is taken from the repository root, never the working directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def show_progress(requested: bool) -> bool:
    """Whether to draw progress bars: as requested, on rank 0 only, and never when tqdm's own ``TQDM_DISABLE``
    is set (any non-empty value, as tqdm reads it). The bars pass ``disable`` explicitly, which tqdm lets win
    over its environment defaults (and tqdm.notebook ignores them), so the switch is read here."""
    return requested and not os.environ.get("TQDM_DISABLE") and is_main()


def get_device(device: str | None = None) -> torch.device:
    """CUDA when present, else CPU; an explicit ``device`` string wins."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)
