"""Training and evaluation for classification and reconstruction, with atomic, resumable checkpoints."""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import show_progress
from .distributed import is_main, shard, unwrap, wrap

TASKS = ("classification", "reconstruction")
OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("onecycle", "cosine", "plateau", "none")


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def metric_name(task: str) -> str:
    """The headline metric: accuracy (%) for classification, PSNR (dB, pixels in [0, 1]) for reconstruction."""
    check_task(task)
    return "acc" if task == "classification" else "psnr"


def task_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, or the per-element mean squared error with pixels on the [0, 1] scale."""
    return F.cross_entropy(output, target) if task == "classification" else F.mse_loss(output, target)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on the [0, 1] pixel scale."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@dataclass(frozen=True)
class Speed:
    """How the loops use the hardware; none changes what is computed, bf16 only its precision.

    ``channels_last``: the model's weights and every 4-D batch in NHWC order (faster convolutions on GPUs and on
    many CPUs); ``bf16``: the forward and the loss under bfloat16 autocast (GPUs; CPUs with AVX512-BF16 or AMX);
    ``compile``: ``torch.compile`` of the model's forward in place (state_dict keys unchanged).
    """

    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    @classmethod
    def for_device(cls, device: torch.device | str, channels_last: bool | None = None, bf16: bool | None = None,
                   compile: bool = False) -> "Speed":
        """The options for ``device``; one left as None is on where it is the usual speed-up (CUDA), else off."""
        cuda = torch.device(device).type == "cuda"
        return cls(cuda if channels_last is None else channels_last, cuda if bf16 is None else bf16, compile)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Apply the memory format and compilation to ``model`` in place; return it."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            # compiled modules share one code object's cache: train and eval modes, alpha's three paths, the teacher
            # and the partial last batch each add entries, more than dynamo's default limit of 8
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_GRAPHS_LIMIT)
            model.compile()
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def autocast(self, x: torch.Tensor):
        """bfloat16 autocast on ``x``'s device when ``bf16`` is set, else a context that does nothing."""
        return torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()


PLAIN = Speed()
COMPILED_GRAPHS_LIMIT = 64


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, task: str, speed: Speed = PLAIN) -> dict[str, float]:
    """Mean loss and the task metric over ``loader`` in eval mode (the model's mode is restored)."""
    check_task(task)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0  # sums stay on the device until the end: no stall per batch
    for x, y in loader:
        x = speed.inputs(x)
        with speed.autocast(x):
            out = model(x)
        out = out.float()
        n = len(x)
        total_loss = total_loss + task_loss(task, out, y) * n
        if task == "classification":
            correct = correct + (out.argmax(1) == y).sum()
        count += n
    model.train(was_training)
    loss = float(total_loss) / max(count, 1)
    metric = 100.0 * float(correct) / max(count, 1) if task == "classification" else psnr(loss)
    return {"loss": loss, metric_name(task): metric}


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                   nesterov: bool = True) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                   patience: int = 3, factor: float = 0.1):
    """A learning-rate scheduler. ``onecycle`` and ``cosine`` step per batch, ``plateau`` per epoch."""
    if name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=patience, factor=factor)
    if name == "none":
        return None
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")


def steps_per_batch(scheduler) -> bool:
    return scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def supervised_loss(task: str):
    """``loss_fn(model, x, y) -> (loss, output)`` for the task's own loss."""
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        output = model(x)
        return task_loss(task, output, y), output
    return loss_fn


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                scheduler=None, before_step: Callable[[], None] | None = None, progress: bool = True,
                description: str = "train", speed: Speed = PLAIN, check_every: int | None = None) -> dict[str, float]:
    """One pass over ``loader``. ``loss_fn(model, x, y)`` returns (loss, output).

    ``before_step`` runs before every batch (the pruning loop moves alpha there). ``speed``: memory format and
    autocast of the forward and loss. Raises NonFiniteLossError on a NaN or infinite loss, found by reading the
    running loss every ``check_every`` batches and after the last. The default reads it after every batch on a CPU,
    before the optimiser applies a bad loss, and every 50 on an accelerator, where each read stalls the device (a
    bad loss may then have been applied; ``fit`` writes no checkpoint of that epoch, ``prune`` rolls the stage back).
    """
    model.train()
    total, count = 0.0, 0  # the running sum stays on the device between reads
    batches = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(loader, desc=description, leave=False, disable=not show_progress(progress))
    for index, (x, y) in enumerate(bar, start=1):
        if before_step is not None:
            before_step()
        x = speed.inputs(x)
        with speed.autocast(x):
            loss, _ = loss_fn(model, x, y)
        total = total + loss.detach().float() * len(x)
        count += len(x)
        every = check_every or (1 if x.device.type == "cpu" else 50)
        if index % every == 0 or index == batches:
            _check_finite(total, count, description)
            bar.set_postfix(loss=f"{float(total) / count:.4f}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if steps_per_batch(scheduler):
            scheduler.step()
    _check_finite(total, count, description)
    return {"loss": float(total) / max(count, 1)}


def _check_finite(total: torch.Tensor | float, count: int, description: str) -> None:
    if not math.isfinite(float(total)):
        raise NonFiniteLossError(f"{description}: the loss became {float(total)} within the first {count} samples")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
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


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------
def fit(model: nn.Module, train_loader, val_loader, *, task: str, epochs: int, lr: float,
        optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4, scheduler: str = "onecycle",
        checkpoint: str | Path | None = None, meta: dict | None = None, progress: bool = True,
        plateau_patience: int = 3, speed: Speed = PLAIN) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs; return the per-epoch history.

    With ``checkpoint`` set, the full state (model, optimiser, scheduler, data order, RNG, history)
    is written atomically after every epoch, and an existing checkpoint there is resumed, so an
    interrupted run continues the same history. ``meta`` is stored beside it (e.g. the model's
    settings) so a mismatch can be explained. ``speed`` (:class:`Speed`) prepares the model and runs the loops. Under ``torchrun`` (see :mod:`pruning_utils.distributed`) it
    trains with DistributedDataParallel, each rank on its share of every batch.
    """
    check_task(task)
    if epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {epochs}")
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, momentum, weight_decay)
    sched = make_scheduler(scheduler, opt, max(epochs, 1), len(train_loader), patience=plateau_patience)
    history: list[dict] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location=next(model.parameters()).device)
        load_model_state(model, state["model"], source=f"checkpoint {checkpoint}")
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        if hasattr(train_loader, "load_state_dict"):
            train_loader.load_state_dict(state["loader"])
        _set_rng_state(state["rng"])
        history = list(state["history"])

    loss_fn = supervised_loss(task)
    net, shards = wrap(speed.prepare(model)), shard(train_loader)  # DDP when several processes run
    bar = tqdm(range(len(history), epochs), desc="epochs", disable=not show_progress(progress))
    for epoch in bar:
        start = time.perf_counter()
        train = train_epoch(net, shards, opt, loss_fn, sched, progress=progress, description=f"epoch {epoch + 1}",
                            speed=speed)
        val = evaluate(model, val_loader, task, speed)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val["loss"])
        record = {"epoch": epoch + 1, "train_loss": train["loss"], **{f"val_{k}": v for k, v in val.items()},
                  "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith("val_")})
        if checkpoint is not None:
            save_checkpoint(checkpoint, epoch=epoch + 1, model=unwrap(model).state_dict(), optimizer=opt.state_dict(),
                            scheduler=sched.state_dict() if sched is not None else {},
                            loader=train_loader.state_dict() if hasattr(train_loader, "state_dict") else {},
                            rng=_rng_state(), history=history, meta=meta or {})
    return history

