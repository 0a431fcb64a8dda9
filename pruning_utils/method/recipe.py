"""The method's settings: one :class:`Recipe` whose defaults are the best recipe measured."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .pruning import PruneConfig
from .schedules import Stage, ramp, stages, step_values


@dataclass(frozen=True)
class Recipe:
    """One way to run the parallel-branch method on a classifier: every factor of notebook 08's ablation study.

    The defaults are the study's winner (``figures/08_method_ablations_cifar10_w0.25.json``): L1 warm start, alpha
    ramped linearly over a quarter of the epochs, then alpha = 0, one-cycle SGD, and distillation from the alpha = 1
    path (the baseline) instead of cross-entropy (+2.3 validation points over cross-entropy, two seeds).
    """

    init: str = "l1"  # branch initialisation: "he" or "l1" (the original's filters of largest L1 norm)
    schedule: str = "linear"  # "linear" / "cosine" ramp of alpha per step, or "stages" (the seeds: constant alpha)
    ramp_epochs: int = 2  # ramps: epochs of the ramp; the rest of the main epochs train at alpha = 0
    stage_delta: float = 0.25  # stages: alpha drops by this per stage (0.25: 0.75, 0.5, 0.25, 0)
    loss: str = "kd"  # "ce", "logits_mse", "kd", "ce+kd" (teacher: the alpha = 1 path, i.e. the baseline)
    kd_temperature: float = 4.0
    kd_weight: float = 0.5  # weight of distillation in "ce+kd"
    freeze_original: bool = False  # keep the pretrained layers that the branches replace fixed
    lr_schedule: str = "onecycle"  # one schedule over the run, or "plateau": reset at every stage (the seeds)
    restarts: int = 0  # alpha = 0 restarts with the learning rate x10, taken from the epoch budget
    restart_epochs: int = 2
    bn_recalibration_batches: int = 0  # re-estimate BatchNorm statistics at alpha = 0 on this many batches
    alpha_order: str = "together"  # "deep_first" / "shallow_first": units leave their original path in turn
    alpha_stagger: float = 0.5

    def schedule_for(self, epochs: int) -> list[Stage]:
        """The alpha schedule that, with the restarts, takes exactly ``epochs`` epochs."""
        main = epochs - self.restarts * self.restart_epochs
        if self.schedule == "stages":
            values = step_values(self.stage_delta)
            if main < len(values) or main % len(values):
                raise ValueError(f"a stage schedule with delta {self.stage_delta} has {len(values)} stages: "
                                 f"{main} main epochs do not split evenly over them; change epochs or stage_delta")
            return stages(values, main // len(values))
        if not 0 < self.ramp_epochs < main:
            raise ValueError(f"ramp_epochs must leave at least one alpha = 0 epoch of the {main} main epochs, "
                             f"got {self.ramp_epochs}")
        return ramp(self.schedule, self.ramp_epochs, main - self.ramp_epochs)

    def prune_config(self, lr: float, weight_decay: float) -> PruneConfig:
        """The pruning loop's settings for this recipe (restarts keep the best alpha = 0 weights)."""
        names = {f.name for f in fields(PruneConfig)}
        options = {k: v for k, v in asdict(self).items() if k in names}
        return PruneConfig(lr=lr, weight_decay=weight_decay, **options)

    def check(self, epochs: int) -> None:
        """Raise ValueError, before any training, when this recipe cannot run in ``epochs``."""
        if self.init not in ("he", "l1"):
            raise ValueError(f"init must be 'he' or 'l1', got {self.init!r}")
        if self.schedule not in ("linear", "cosine", "stages"):
            raise ValueError(f"schedule must be 'linear', 'cosine' or 'stages', got {self.schedule!r}")
        self.schedule_for(epochs)
        self.prune_config(0.01, 0.0).validate("classification")
