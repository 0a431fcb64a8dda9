"""The method's settings: one :class:`Recipe` whose defaults are the best recipe measured.

Everything that runs the method (``prune``, ``prune_and_fold``, the CLI, the comparison, the ablation study, every
notebook) takes a Recipe or changes to its defaults, so there is one place where a default lives. The defaults are
notebook 08's winner (``figures/08_method_ablations_cifar10_w0.25.json``): L1 warm start, alpha ramped linearly over
a quarter of the epochs, then alpha = 0, one-cycle SGD, and distillation from the frozen baseline (+2.3 validation
points over cross-entropy, two seeds). :meth:`Recipe.seeds` is the seeds' recipe (reports 4-9).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..engine.tasks import Task, get_task
from .schedules import KINDS, Stage, make_schedule, ramp

INITS = ("he", "l1")
BRANCH_KINDS = ("conv", "projection")
# settings added after runs had been checkpointed: at these values they are left out of a run's settings, so the
# checkpoints of those runs still resume
LATER_SETTINGS = {"branch_kind": "conv"}
LR_SCHEDULES = ("plateau", "constant", "onecycle", "cosine")
ALPHA_ORDERS = ("together", "deep_first", "shallow_first")
LOSSES = ("ce", "logits_mse", "kd", "ce+kd", "reconstruction")
TEACHER_LOSSES = ("logits_mse", "kd", "ce+kd")
STAGE_KINDS = ("step", "exponential", "multiplicative", "explicit")


@dataclass(frozen=True)
class Recipe:
    """Every setting of the parallel-branch method: branches, alpha schedule, loss, optimisation, final phase."""

    # branches
    init: str = "l1"  # branch initialisation: "he" or "l1" (the original's filters of largest L1 norm)
    branch_kind: str = "conv"  # "conv": k filters of their own; "projection": the seeds' 1x1 P on the shared layer
    freeze_original: bool = False  # keep the pretrained layers that the branches replace fixed
    # the alpha schedule (``schedule_for``): a per-step ramp, or the seeds' stages at constant alpha
    schedule: str = "linear"  # "linear" / "cosine" ramp, or "step", "exponential", "multiplicative", "explicit"
    ramp_epochs: int | None = None  # ramps: epochs of the ramp (None: a quarter of the epochs); then alpha = 0
    stage_delta: float = 0.25  # step: alpha drops by this per stage (0.25: 0.75, 0.5, 0.25, 0)
    stage_rate: float = 0.3  # exponential: alpha_t = exp(-rate t)
    stage_factor: float = 0.5  # multiplicative: alpha <- alpha * factor
    stage_floor: float = 0.05  # exponential / multiplicative: alpha below this becomes 0
    stage_alphas: tuple[float, ...] = (0.5, 0.2, 0.1, 0.0)  # explicit: the alphas of the stages
    epochs_per_stage: int | None = None  # stage schedules: epochs per alpha (None: the epochs split evenly)
    alpha_order: str = "together"  # ramps: all units at once, or staggered ("deep_first", "shallow_first")
    alpha_stagger: float = 0.5  # staggered ramps: fraction of the ramp between the first and the last unit's start
    # the loss
    loss: str | None = None  # None: the task's best ("kd" for classification, MSE for reconstruction); "ce",
    # "logits_mse", "kd", "ce+kd" (teacher: the frozen baseline), "reconstruction"
    kd_temperature: float = 4.0
    kd_weight: float = 0.5  # weight of distillation in "ce+kd"
    # optimisation
    lr: float = 0.01  # peak (one-cycle, cosine) or initial (plateau, constant) learning rate
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "onecycle"  # one schedule over the run ("onecycle", "cosine"), or reset at every stage:
    # "plateau" (the seeds: ReduceLROnPlateau inside a stage) or "constant"
    plateau_patience: int = 2
    plateau_factor: float = 0.1
    stage_patience: int | None = None  # end a stage early after this many epochs without a better val loss
    # after the schedule
    restarts: int = 0  # alpha = 0 restarts with the learning rate x restart_factor each, taken from the epochs
    restart_factor: float = 10.0
    restart_epochs: int | None = None  # epochs of each restart (None: the last stage's)
    restart_patience: int | None = None  # restart only when stuck: no better val metric at alpha 0 in this many
    keep_best: bool = False  # end with the best alpha = 0 weights by validation metric (implied by restarts)
    bn_recalibration_batches: int = 0  # re-estimate BatchNorm statistics at alpha = 0 on this many batches

    @classmethod
    def seeds(cls, **changes) -> "Recipe":
        """The seeds' recipe (reports 4-9): He-initialised branches, alpha <- alpha - 0.1 in constant stages,
        cross-entropy, SGD at 0.001 with the learning rate reset at every alpha drop and ReduceLROnPlateau
        (patience 25) inside a stage, and at alpha = 0 a restart with the learning rate x10 when stuck."""
        seeds = cls(init="he", schedule="step", stage_delta=0.1, loss="ce", lr=0.001, lr_schedule="plateau",
                    plateau_patience=25, restarts=1, restart_epochs=25, restart_patience=25)
        return dataclasses.replace(seeds, **changes)

    def settings(self) -> dict:
        """Every setting as a dict for a run's stored identity, but those of :data:`LATER_SETTINGS` at their old
        values, so that runs stored before those settings existed still resume."""
        return {k: v for k, v in dataclasses.asdict(self).items() if LATER_SETTINGS.get(k, object()) != v}

    def with_changes(self, **changes) -> "Recipe":
        """A copy with ``changes``; unknown names are refused with the list of settings."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ValueError(f"unknown recipe settings {unknown}; a Recipe has {names}")
        return dataclasses.replace(self, **changes)

    def for_task(self, task: str | Task) -> "Recipe":
        """This recipe with the task's own loss filled in where ``loss`` is None, checked against the task."""
        task = get_task(task)
        resolved = self if self.loss is not None else dataclasses.replace(self, loss=task.default_pruning_loss)
        resolved.validate(task)
        return resolved

    def needs_teacher(self) -> bool:
        return self.loss in TEACHER_LOSSES

    def schedule_for(self, epochs: int) -> list[Stage]:
        """The alpha schedule that, with the restarts, takes exactly ``epochs`` epochs."""
        if self.restarts and self.restart_epochs is None:
            raise ValueError("a recipe with restarts needs restart_epochs to fit them into the epochs")
        main = epochs - self.restarts * (self.restart_epochs or 0)
        if self.schedule in STAGE_KINDS:
            values = [stage.start for stage in make_schedule(self.schedule, 1, **self._stage_options())]
            per_stage = self.epochs_per_stage
            if per_stage is None:
                if main < len(values) or main % len(values):
                    raise ValueError(f"the {self.schedule} schedule has {len(values)} stages: {main} epochs do not "
                                     f"split evenly over them; change the epochs or set epochs_per_stage")
                per_stage = main // len(values)
            elif per_stage * len(values) != main:
                raise ValueError(f"{len(values)} stages of {per_stage} epochs take {per_stage * len(values)} epochs, "
                                 f"not the {main} asked for; change epochs_per_stage or the epochs")
            return make_schedule(self.schedule, per_stage, **self._stage_options())
        ramp_epochs = self.ramp_epochs if self.ramp_epochs is not None else max(1, main // 4)
        if not 0 < ramp_epochs < main:
            raise ValueError(f"ramp_epochs must leave at least one alpha = 0 epoch of the {main} epochs, "
                             f"got {ramp_epochs}")
        return ramp(self.schedule, ramp_epochs, main - ramp_epochs)

    def _stage_options(self) -> dict:
        return {"delta": self.stage_delta, "rate": self.stage_rate, "factor": self.stage_factor,
                "floor": self.stage_floor, "values": list(self.stage_alphas)}

    def validate(self, task: str | Task | None = None) -> None:
        """Raise ValueError, before any training, on a setting that cannot run (and, with ``task``, a loss that
        does not fit it)."""
        choices = {"init": INITS, "branch_kind": BRANCH_KINDS, "schedule": KINDS, "lr_schedule": LR_SCHEDULES,
                   "alpha_order": ALPHA_ORDERS, "optimizer": ("sgd", "adam")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or None (the task's own), got {self.loss!r}")
        if task is not None and self.loss is not None and self.loss not in get_task(task).pruning_losses:
            raise ValueError(f"loss {self.loss!r} does not fit task {get_task(task).name!r}: choose one of "
                             f"{get_task(task).pruning_losses}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.restarts < 0 or self.bn_recalibration_batches < 0 or (self.restart_epochs or 1) < 1:
            raise ValueError("restarts and bn_recalibration_batches must be non-negative, restart_epochs positive")
        if not 0 <= self.alpha_stagger < 1:
            raise ValueError(f"alpha_stagger must be in [0, 1), got {self.alpha_stagger}")
        if self.restart_patience is not None and self.restart_patience < 1:
            raise ValueError(f"restart_patience must be at least 1 or None, got {self.restart_patience}")

    def check(self, epochs: int, task: str | Task = "classification") -> None:
        """Raise ValueError, before any training, when this recipe cannot run in ``epochs`` on ``task``."""
        self.validate(task)
        self.schedule_for(epochs)


PruneConfig = Recipe  # the pruning loop's settings before they became one Recipe: the same class
