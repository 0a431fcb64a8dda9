"""Checkpoints: atomic writes, weights-only loading, state_dicts that must fit, RNG state."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .distributed import is_main, unwrap


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(temporary path)`` beside ``path``, then rename it into place: a reader never sees half a file
    (on rank 0 only when several processes run)."""
    path = Path(path)
    if not is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_checkpoint(path: str | Path, **state) -> Path:
    """Write ``state`` with torch.save, atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model_state(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Load a state_dict (into the module inside DDP), or raise a ValueError that lists what does not fit the model."""
    model = unwrap(model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or reshaped:
        lines = [f"{source} does not fit this model (was it saved from another architecture, width or "
                 f"pruning state? build the model with the checkpoint's settings):"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped)):
            if items:
                lines.append(f"  {label} ({len(items)}): " + ", ".join(items[:5]) + (" ..." if len(items) > 5 else ""))
        raise ValueError("\n".join(lines))
    model.load_state_dict(state)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
