"""Content fingerprints: what a cached artefact (a baseline, an arm's result) was made from, so that one made from
other data or another baseline is never reused by mistake."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn


def _update(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _update(digest, item)
    else:
        digest.update(repr(value).encode())


def fingerprint(*values, length: int = 12) -> str:
    """A short hash of tensors, state_dicts, modules and plain values, equal exactly when their contents are."""
    digest = hashlib.sha1()
    for value in values:
        _update(digest, value.state_dict() if isinstance(value, nn.Module) else value)
    return digest.hexdigest()[:length]


def loader_fingerprint(loader) -> str:
    """The fingerprint of the samples a loader draws from (its images and targets, or photos); the loader's
    ``repr`` where it holds neither."""
    held = [getattr(loader, name) for name in ("images", "targets", "photos") if getattr(loader, name, None) is not None]
    return fingerprint(*held) if held else fingerprint(repr(loader))
