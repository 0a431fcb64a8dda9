"""Alpha schedules: the seeds' stage schedules (step, exponential, multiplicative, explicit) and
continuous ramps (linear, cosine) that move alpha every optimiser step, then hold it at 0.

A schedule is a list of :class:`Stage`; every schedule ends with a stage at alpha = 0.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SHAPES = ("constant", "linear", "cosine")
KINDS = ("step", "exponential", "multiplicative", "explicit", "linear", "cosine")


@dataclass(frozen=True)
class Stage:
    """Train ``epochs`` epochs while alpha goes from ``start`` to ``end`` (``shape``: constant, linear, cosine)."""

    start: float
    end: float
    epochs: int
    shape: str = "constant"

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"stage shape must be one of {SHAPES}, got {self.shape!r}")
        for value in (self.start, self.end):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"stage alpha must lie in [0, 1], got {value}")
        if self.shape == "constant" and self.start != self.end:
            raise ValueError("a constant stage needs start == end")
        if self.epochs < 1:
            raise ValueError(f"a stage needs at least one epoch, got {self.epochs}")

    def alpha_at(self, fraction: float) -> float:
        """Alpha after ``fraction`` (0..1) of the stage's steps."""
        fraction = min(max(fraction, 0.0), 1.0)
        if self.shape == "linear":
            weight = fraction
        elif self.shape == "cosine":
            weight = 0.5 * (1 - math.cos(math.pi * fraction))
        else:
            weight = 0.0
        return self.start + (self.end - self.start) * weight

    def as_dict(self) -> dict:
        return asdict(self)


def _finish(values: list[float]) -> list[float]:
    values = [round(v, 10) for v in values]
    if not values or values[-1] != 0.0:
        values.append(0.0)
    return values


def step_values(delta: float = 0.1, start: float = 1.0) -> list[float]:
    """alpha <- alpha - delta from ``start``: e.g. delta 0.25 gives 0.75, 0.5, 0.25, 0."""
    if not 0 < delta <= 1:
        raise ValueError(f"step delta must be in (0, 1], got {delta}")
    count = math.ceil(start / delta - 1e-9)
    return _finish([max(start - delta * i, 0.0) for i in range(1, count + 1)])


def exponential_values(rate: float, floor: float = 0.05) -> list[float]:
    """alpha_t = exp(-rate * t) for t = 1, 2, ...; once below ``floor`` alpha becomes 0."""
    if rate <= 0:
        raise ValueError(f"exponential rate must be positive, got {rate}")
    if not 0 < floor < 1:
        raise ValueError(f"floor must be in (0, 1), got {floor}")
    values, t = [], 1
    while (alpha := math.exp(-rate * t)) >= floor:
        values.append(alpha)
        t += 1
    return _finish(values)


def multiplicative_values(factor: float, floor: float = 0.05, start: float = 1.0) -> list[float]:
    """alpha <- alpha * factor from ``start``; once below ``floor`` alpha becomes 0."""
    if not 0 < factor < 1:
        raise ValueError(f"multiplicative factor must be in (0, 1), got {factor}")
    if not 0 < floor < 1:
        raise ValueError(f"floor must be in (0, 1), got {floor}")
    values, alpha = [], start * factor
    while alpha >= floor:
        values.append(alpha)
        alpha *= factor
    return _finish(values)


def explicit_values(values) -> list[float]:
    """A given, non-increasing list of alphas in [0, 1]; 0 is appended if it does not end there."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("an explicit schedule needs at least one alpha value")
    if any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"explicit alphas must lie in [0, 1], got {values}")
    if any(b > a for a, b in zip(values, values[1:])):
        raise ValueError(f"explicit alphas must not increase, got {values}")
    return _finish(values)


def stages(values: list[float], epochs_per_stage: int) -> list[Stage]:
    """One constant stage per alpha value."""
    return [Stage(v, v, epochs_per_stage) for v in values]


def ramp(shape: str = "linear", ramp_epochs: int = 2, final_epochs: int = 6, start: float = 1.0) -> list[Stage]:
    """Alpha moves from ``start`` to 0 every optimiser step over ``ramp_epochs``, then stays 0."""
    if shape not in ("linear", "cosine"):
        raise ValueError(f"ramp shape must be 'linear' or 'cosine', got {shape!r}")
    return [Stage(start, 0.0, ramp_epochs, shape), Stage(0.0, 0.0, final_epochs)]


def make_schedule(kind: str, epochs_per_stage: int = 2, *, delta: float = 0.1, rate: float = 0.3,
                  factor: float = 0.5, floor: float = 0.05, values=None, ramp_epochs: int = 2,
                  final_epochs: int = 6) -> list[Stage]:
    """Build a schedule by name (``KINDS``); the notebooks' single entry point.

    step: ``delta``; exponential: ``rate``, ``floor``; multiplicative: ``factor``, ``floor``;
    explicit: ``values``; all four train ``epochs_per_stage`` per alpha. linear / cosine:
    ``ramp_epochs`` of per-step ramp, then ``final_epochs`` at alpha = 0.
    """
    if kind == "step":
        return stages(step_values(delta), epochs_per_stage)
    if kind == "exponential":
        return stages(exponential_values(rate, floor), epochs_per_stage)
    if kind == "multiplicative":
        return stages(multiplicative_values(factor, floor), epochs_per_stage)
    if kind == "explicit":
        if values is None:
            raise ValueError("an explicit schedule needs `values`")
        return stages(explicit_values(values), epochs_per_stage)
    if kind in ("linear", "cosine"):
        return ramp(kind, ramp_epochs, final_epochs)
    raise ValueError(f"schedule kind must be one of {KINDS}, got {kind!r}")


def total_epochs(schedule: list[Stage]) -> int:
    return sum(stage.epochs for stage in schedule)
