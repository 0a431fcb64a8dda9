"""Training and evaluation for classification and reconstruction, with atomic, resumable checkpoints."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import show_progress
from .checkpoints import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from .distributed import shard, unwrap, wrap
from .speed import PLAIN, Speed
from .tasks import Task, get_task

OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("onecycle", "cosine", "plateau", "none")


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, task: str | Task, speed: Speed = PLAIN) -> dict[str, float]:
    """Mean loss and the task's metric over ``loader`` in eval mode (the model's mode is restored)."""
    task = get_task(task)
    was_training = model.training
    model.eval()
    total_loss, score, count = 0.0, 0, 0  # sums stay on the device until the end: no stall per batch
    for x, y in loader:
        x = speed.inputs(x)
        with speed.autocast(x):
            out = model(x)
        out = out.float()
        total_loss = total_loss + task.loss(out, y) * len(x)
        batch_score = task.batch_score(out, y)
        score = score if batch_score is None else score + batch_score
        count += len(x)
    model.train(was_training)
    loss = float(total_loss) / max(count, 1)
    return {"loss": loss, task.metric: task.metric_value(loss, float(score), count)}


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


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                scheduler=None, before_step: Callable[[], None] | None = None, progress: bool = True,
                description: str = "train", speed: Speed = PLAIN, check_every: int | None = None,
                task: str | Task | None = None) -> dict[str, float]:
    """One pass over ``loader``. ``loss_fn(model, x, y)`` returns (loss, output). With a classification ``task``
    the result also has ``acc``: the training accuracy of the outputs the steps computed (weights moving).

    ``before_step`` runs before every batch (the pruning loop moves alpha there). ``speed``: memory format and
    autocast of the forward and loss. Raises NonFiniteLossError on a NaN or infinite loss, found by reading the
    running loss every ``check_every`` batches and after the last. The default reads it after every batch on a CPU,
    before the optimiser applies a bad loss, and every 50 on an accelerator, where each read stalls the device (a
    bad loss may then have been applied; ``fit`` writes no checkpoint of that epoch, ``prune`` rolls the stage back).
    """
    model.train()
    scored = task is not None and get_task(task).metric == "acc"
    total, correct, count = 0.0, 0, 0  # the running sums stay on the device between reads
    batches = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(loader, desc=description, leave=False, disable=not show_progress(progress))
    for index, (x, y) in enumerate(bar, start=1):
        if before_step is not None:
            before_step()
        x = speed.inputs(x)
        with speed.autocast(x):
            loss, output = loss_fn(model, x, y)
        total = total + loss.detach().float() * len(x)
        if scored:
            correct = correct + (output.detach().argmax(1) == y).sum()
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
    result = {"loss": float(total) / max(count, 1)}
    return {**result, "acc": 100.0 * float(correct) / max(count, 1)} if scored else result


def _check_finite(total: torch.Tensor | float, count: int, description: str) -> None:
    if not math.isfinite(float(total)):
        raise NonFiniteLossError(f"{description}: the loss became {float(total)} within the first {count} samples")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Resumable training state
# --------------------------------------------------------------------------------------------
class ResumeMismatchError(ValueError):
    """A checkpoint was written by a run with other settings than the one asked to resume it."""


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as one level of dotted names, values as JSON gives them back (tuples become lists)."""
    flat = {}
    for key, value in json.loads(json.dumps(settings, default=str)).items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume(saved: dict | None, requested: dict, path: str | Path) -> None:
    """Raise :class:`ResumeMismatchError` naming every setting in which the run that wrote the checkpoint at
    ``path`` (``saved``) differs from the ``requested`` one, and how to start afresh."""
    if saved is None:
        raise ResumeMismatchError(f"{path} records no settings (written by an older version), so resuming it could "
                                  f"mix two runs: delete it (or its folder) to start afresh")
    saved, requested = _flat(saved), _flat(requested)
    differ = [f"{k}: checkpoint {saved.get(k, '(not set)')!r}, now {requested.get(k, '(not set)')!r}"
              for k in sorted(set(saved) | set(requested)) if saved.get(k) != requested.get(k)]
    if differ:
        raise ResumeMismatchError(f"{path} was written by a run with other settings; resuming would mix two runs:\n  "
                                  + "\n  ".join(differ) + f"\nUse the checkpoint's settings, or delete {path} (or "
                                  f"pass resume=False / RESUME=False) to start afresh")


def training_state(*, model: nn.Module, optimizer, scheduler, loader, history: list[dict], settings: dict,
                   **extra) -> dict:
    """Everything a resumed run needs: weights, optimiser, scheduler, data order, RNG, history and settings."""
    return {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict() if optimizer else {},
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "loader": loader.state_dict() if hasattr(loader, "state_dict") else {}, "rng": rng_state(),
            "history": history, "settings": settings, **extra}


def restore_training_state(state: dict, *, model: nn.Module, optimizer, scheduler, loader, source: str) -> list[dict]:
    """Load what :func:`training_state` saved into the run's objects; return the saved history."""
    load_model_state(model, state["model"], source=source)
    if optimizer is not None and state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    if hasattr(loader, "load_state_dict") and state.get("loader"):
        loader.load_state_dict(state["loader"])
    set_rng_state(state["rng"])
    return list(state["history"])


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------
def fit(model: nn.Module, train_loader, val_loader, *, task: str | Task, epochs: int, lr: float,
        optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4, scheduler: str = "onecycle",
        checkpoint: str | Path | None = None, meta: dict | None = None, progress: bool = True,
        plateau_patience: int = 3, speed: Speed = PLAIN) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs; return the per-epoch history.

    With ``checkpoint`` set, the full state (model, optimiser, scheduler, data order, RNG, history)
    is written atomically after every epoch, and an existing checkpoint there is resumed, so an
    interrupted run continues the same history. The settings (these arguments and ``meta``: the model's and the
    data's identity) are stored with it, and a checkpoint written with other settings is refused
    (:class:`ResumeMismatchError`) rather than mixed into this run. ``speed`` (:class:`Speed`) prepares the model
    and runs the loops. Under ``torchrun`` (see :mod:`pruning_utils.engine.distributed`) it trains with
    DistributedDataParallel, each rank on its share of every batch.
    """
    task = get_task(task)
    if epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {epochs}")
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, momentum, weight_decay)
    sched = make_scheduler(scheduler, opt, max(epochs, 1), len(train_loader), patience=plateau_patience)
    settings = {"task": task.name, "epochs": epochs, "lr": lr, "optimizer": optimizer, "momentum": momentum,
                "weight_decay": weight_decay, "scheduler": scheduler, "plateau_patience": plateau_patience,
                **(meta or {})}
    history: list[dict] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location=next(model.parameters()).device)
        check_resume(state.get("settings"), settings, checkpoint)
        history = restore_training_state(state, model=model, optimizer=opt, scheduler=sched, loader=train_loader,
                                         source=f"checkpoint {checkpoint}")

    loss_fn = task.supervised_loss()
    net, shards = wrap(speed.prepare(model)), shard(train_loader)  # DDP when several processes run
    bar = tqdm(range(len(history), epochs), desc="epochs", disable=not show_progress(progress))
    for epoch in bar:
        start = time.perf_counter()
        train = train_epoch(net, shards, opt, loss_fn, sched, progress=progress, description=f"epoch {epoch + 1}",
                            speed=speed, task=task)
        val = evaluate(model, val_loader, task, speed)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val["loss"])
        record = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train.items()},
                  **{f"val_{k}": v for k, v in val.items()},
                  "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith("val_")})
        if checkpoint is not None:
            save_checkpoint(checkpoint, epoch=epoch + 1, **training_state(
                model=model, optimizer=opt, scheduler=sched, loader=train_loader, history=history, settings=settings))
    return history
