"""Several processes (GPUs or machines) under ``torchrun``: DistributedDataParallel for the training and pruning loops.

Every rank builds the same loaders with the same seed, so every rank sees the same global batches (and the same
augmentation); :class:`ShardedLoader` hands each rank its contiguous share of every batch, and DDP averages the
gradients, so a step equals a single process's step over the global batch (BatchNorm statistics aside: they are
per rank). Alpha and the schedule are
computed identically on every rank from the step count. Only rank 0 writes checkpoints, figures and records and
draws progress bars (:func:`is_main`).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True in a single process and on rank 0 of several: the one that writes files and draws progress bars."""
    return rank() == 0


def setup() -> torch.device:
    """Join the process group ``torchrun`` describes in the environment (nothing to do without it) and return this
    rank's device: its own GPU (NCCL) where CUDA is present, else the CPU (gloo). The training and pruning loops
    (:func:`pruning_utils.engine.train.fit`, :func:`pruning_utils.method.pruning.prune`) then use DDP by themselves."""
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes run, else unchanged.

    ``find_unused_parameters`` is on: at alpha = 0 the original path, and at alpha = 1 the branches, get no
    gradient. BatchNorm statistics stay per rank (SyncBatchNorm would need GPUs and is not a plain layer that
    folding can read).
    """
    if not active():
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (state_dicts without the ``module.`` prefix)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def shard(loader):
    """``loader`` as a :class:`ShardedLoader` when several processes run, else unchanged."""
    return ShardedLoader(loader) if active() else loader


class ShardedLoader:
    """This rank's contiguous share of every batch of ``loader`` (the same batches on every rank)."""

    def __init__(self, loader, rank_: int | None = None, world: int | None = None):
        self.loader = loader
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world})")

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            if len(x) < self.world:
                raise ValueError(f"a batch of {len(x)} cannot be shared by {self.world} processes; use a larger batch")
            yield x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)
