"""The method's ablation study: one reference recipe, each factor changed alone, then the best combination.

A :class:`~pruning_utils.Recipe` holds every factor of the parallel-branch method (branch
initialisation, alpha schedule and the length of its alpha = 0 phase, loss, frozen or updated original,
learning-rate policy, BatchNorm re-estimation, the order in which units lose their original path). :data:`ARMS` changes one factor of the reference each;
BatchNorm re-estimation at alpha = 0 is measured on every arm's final weights (paired, no extra training);
:func:`combine` merges the changes that helped. :func:`run_study` runs every (arm, seed) from one baseline with
the same number of epochs and writes each result atomically as JSON, so a study resumes (and the sweep command can
split it over processes); :func:`summarize_arms` gives the mean and spread over seeds, paired against the reference.
Torch-Pruning's L1 filter pruning runs under the same protocol as the structured yardstick.
"""
from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from ..config import seed_everything
from ..engine.checkpoints import atomic_write
from ..engine.tasks import CLASSIFICATION
from ..engine.train import check_resume, evaluate
from ..method.budget import keep_ratio_for_fraction
from ..method.folding import fold
from ..method.pipeline import prune_and_fold
from ..method.pruning import recalibrate_batchnorm
from ..method.recipe import Recipe
from .comparison import ComparisonConfig, arm_identity, forget
from .comparison import run_arm as run_rival

RIVAL = "torch_pruning_l1"  # the structured yardstick, run under the same protocol


# The reference of the study: the recipe of the comparison before it (L1 warm start, linear 2-epoch ramp, CE).
REFERENCE = Recipe(init="l1", schedule="linear", ramp_epochs=2, loss="ce", freeze_original=False,
                   lr_schedule="onecycle", restarts=0, restart_epochs=2, bn_recalibration_batches=0,
                   alpha_order="together")

# Each arm: (factor, changes to the reference recipe).
ARMS: dict[str, tuple[str, dict]] = {
    "reference": ("reference", {}),
    "he_init": ("branch init", {"init": "he"}),
    "projection": ("branch kind", {"branch_kind": "projection"}),  # the seeds' 1x1 P on the unit's shared layer
    "seeds_stages": ("schedule", {"schedule": "step"}),
    "cosine_ramp": ("schedule", {"schedule": "cosine"}),
    "one_shot": ("schedule", {"schedule": "explicit", "stage_alphas": (0.0,)}),  # the largest decay: 1 -> 0 at once
    "ramp_1": ("final phase", {"ramp_epochs": 1}),
    "ramp_4": ("final phase", {"ramp_epochs": 4}),
    "logits_mse": ("loss", {"loss": "logits_mse"}),
    "kd": ("loss", {"loss": "kd"}),
    "ce_kd": ("loss", {"loss": "ce+kd"}),
    "frozen_original": ("pretrained weights", {"freeze_original": True}),
    "lr_reset": ("lr policy", {"lr_schedule": "plateau"}),
    "lr_restart": ("lr policy", {"restarts": 1}),
    "deep_first": ("own idea", {"alpha_order": "deep_first"}),
    "seeds_recipe": ("the seeds", {"init": "he", "schedule": "step", "lr_schedule": "plateau"}),
}
FACTOR_ARMS = [name for name, (factor, _) in ARMS.items() if factor not in ("reference", "the seeds")]


def changes_of(arm: str, extra: dict[str, dict] | None = None) -> dict:
    """The changes to the reference of a named arm: one of :data:`ARMS`, the rival (none), or a name in ``extra``
    ({name: changes}, e.g. the combinations of :func:`combine` and :func:`stacked`)."""
    if extra and arm in extra:
        return extra[arm]
    if arm == RIVAL:
        return {}
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {list(ARMS)}, {RIVAL!r} or a combination")
    return ARMS[arm][1]


def recipe_of(arm: str, extra: dict[str, dict] | None = None) -> Recipe:
    """The recipe of a named arm (see :func:`changes_of`)."""
    return REFERENCE.with_changes(**changes_of(arm, extra))


@dataclass
class StudyConfig:
    """The protocol every arm shares."""

    fraction: float = 0.35  # parameter budget: fraction of the baseline's parameters
    epochs: int = 8  # epochs after the baseline, every arm
    lr: float = Recipe().lr  # peak (one-cycle) or initial learning rate, every arm and the rival
    weight_decay: float = Recipe().weight_decay
    bn_batches: int = 50  # batches of the BatchNorm re-estimation measured beside every arm


def _bn_recalibrated(model: nn.Module, loaders, batches: int) -> dict:
    """Validation and (folded) test accuracy of a copy of the alpha = 0 ``model`` with re-estimated BatchNorm."""
    model = copy.deepcopy(model)
    recalibrate_batchnorm(model, loaders[0], batches)
    folded = fold(model).eval()
    return {"val_acc_bn": evaluate(model, loaders[1], CLASSIFICATION)["acc"],
            "test_acc_bn": evaluate(folded, loaders[2], CLASSIFICATION)["acc"]}


def run_one(arm: str, seed: int, baseline: nn.Module, loaders, input_shape, config: StudyConfig, *,
            extra: dict[str, dict] | None = None, checkpoint_dir: Path | None = None, progress: bool = True) -> dict:
    """Run one arm with one seed from ``baseline``; return its row (accuracies, parameters, seconds, curve)."""
    keep_ratio = keep_ratio_for_fraction(baseline, config.fraction)
    seed_everything(seed)
    if arm == RIVAL:
        protocol = ComparisonConfig(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay)
        model, metrics = run_rival(RIVAL, copy.deepcopy(baseline), keep_ratio, loaders, input_shape, protocol,
                                   seed=seed, checkpoint_dir=checkpoint_dir, progress=progress)
        return {"arm": arm, "factor": "structured rival", "seed": seed, "changes": {}, **{
            k: metrics[k] for k in ("params", "macs", "epochs", "train_seconds", "val_acc", "test_acc")}}
    recipe = recipe_of(arm, extra).with_changes(lr=config.lr, weight_decay=config.weight_decay)
    recipe.check(config.epochs)
    start = time.perf_counter()
    result = prune_and_fold(baseline, keep_ratio, loaders, recipe=recipe, epochs=config.epochs, task=CLASSIFICATION,
                            input_shape=input_shape, checkpoint_dir=checkpoint_dir, progress=progress)
    seconds = time.perf_counter() - start
    metrics = result.metrics
    return {"arm": arm, "factor": ARMS[arm][0] if arm in ARMS else "combined", "seed": seed,
            "changes": changes_of(arm, extra), "params": metrics["params"],
            "macs": metrics["macs"], "epochs": metrics["epochs"], "train_seconds": seconds,
            "val_acc": metrics["val_acc"], "test_acc": metrics["test_acc"],
            **_bn_recalibrated(result.model, loaders, config.bn_batches),
            "curve": [{"epoch": h["epoch"], "alpha": h["alpha"], "val_acc": h["val_acc"]}
                      for h in result.history if h.get("phase") != "bn_recalibrated"]}


def run_study(arms, seeds, baseline: nn.Module, make_loaders, input_shape, config: StudyConfig, *,
              results_dir: str | Path, extra: dict[str, dict] | None = None, resume: bool = True,
              progress: bool = True) -> list[dict]:
    """Every arm with every seed; ``make_loaders(seed)`` gives (train, val, test); ``extra`` names further recipes
    ({name: changes to the reference}). One JSON per (arm, seed) in ``results_dir``, read instead of rerun with
    ``resume`` when its changes are the arm's; stage checkpoints let an interrupted arm continue. An ``extra``
    recipe equal to an arm of :data:`ARMS` already run with that seed takes its result (training is deterministic
    for a seed), marked ``same_as``."""
    unknown = [a for a in arms if a not in ARMS and a != RIVAL and a not in (extra or {})]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}, {RIVAL!r} or a combination")
    for arm in arms:
        if arm != RIVAL:
            recipe_of(arm, extra).check(config.epochs)
    results_dir = Path(results_dir)
    made_from = {seed: arm_identity(baseline, make_loaders(seed), config, seed) for seed in seeds}
    rows = []
    for arm in arms:
        changes = changes_of(arm, extra)
        for seed in seeds:
            path = results_dir / f"{arm}_s{seed}.json"
            if resume and path.is_file() and json.loads(path.read_text())["changes"] == changes:
                row = json.loads(path.read_text())
                check_resume(row.get("made_from"), made_from[seed], path)
                rows.append(row)
                continue
            twin = _same_recipe(arm, extra, results_dir, seed) if resume and arm in (extra or {}) else None
            if twin:
                row = {**json.loads((results_dir / f"{twin}_s{seed}.json").read_text()), "arm": arm,
                       "factor": "combined", "changes": changes, "same_as": twin}
                check_resume(row.get("made_from"), made_from[seed], results_dir / f"{twin}_s{seed}.json")
            else:
                checkpoints = results_dir / "checkpoints" / f"{arm}_s{seed}"
                checkpoint = checkpoints / f"{RIVAL}.pt" if arm == RIVAL else checkpoints
                if not resume or arm not in ARMS and arm != RIVAL:  # a combination's recipe may change
                    forget(checkpoint)
                row = run_one(arm, seed, baseline, make_loaders(seed), input_shape, config, extra=extra,
                              checkpoint_dir=checkpoints if arm == RIVAL else checkpoint, progress=progress)
                row["made_from"] = made_from[seed]
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(row, indent=2, default=float)))
            rows.append(row)
    return rows


def _same_recipe(arm: str, extra: dict, results_dir: Path, seed: int) -> str | None:
    """The arm of :data:`ARMS` with ``arm``'s recipe whose result for ``seed`` is in ``results_dir``, if any."""
    recipe = recipe_of(arm, extra)
    return next((a for a in ARMS if recipe_of(a) == recipe and (results_dir / f"{a}_s{seed}.json").is_file()), None)


def summarize_arms(rows: list[dict], metric: str = "val_acc", reference: str = "reference") -> list[dict]:
    """Per arm: mean, spread (max - min) and the seeds' values of ``metric`` and of its test and BatchNorm
    re-estimated counterparts, and ``gain``: the mean paired difference to ``reference`` over shared seeds."""
    by_arm: dict[str, list[dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    base = {r["seed"]: r[metric] for r in by_arm.get(reference, [])}
    table = []
    for arm, runs in by_arm.items():
        values = [r[metric] for r in runs]
        paired = [r[metric] - base[r["seed"]] for r in runs if r["seed"] in base]
        entry = {"arm": arm, "factor": runs[0]["factor"], "seeds": len(runs), "mean": statistics.fmean(values),
                 "spread": max(values) - min(values), "values": values,
                 "gain": statistics.fmean(paired) if paired and arm != reference else None,
                 "test_mean": statistics.fmean(r["test_acc"] for r in runs),
                 "seconds": statistics.fmean(r["train_seconds"] for r in runs), "params": runs[0]["params"]}
        if all("val_acc_bn" in r for r in runs):
            entry["bn_mean"] = statistics.fmean(r[f"{metric}_bn"] for r in runs)
            entry["test_bn_mean"] = statistics.fmean(r["test_acc_bn"] for r in runs)
        table.append(entry)
    return table


def combine(summary: list[dict], epochs: int, min_gain: float = 0.2, bn_batches: int = 50) -> dict:
    """The changes of the factor arms that beat the reference by more than ``min_gain`` (mean paired validation
    points), best first; a change is skipped when it sets a field already set or the merged recipe cannot run in
    ``epochs``. BatchNorm re-estimation (``bn_batches``) joins when it lifts the reference by more than
    ``min_gain``. Returns the merged changes ({} when nothing helped)."""
    helpful = sorted((s for s in summary if s["arm"] in FACTOR_ARMS and (s["gain"] or 0) > min_gain),
                     key=lambda s: s["gain"], reverse=True)
    merged: dict = {}
    for entry in helpful:
        changes = ARMS[entry["arm"]][1]
        if set(changes) & set(merged):
            continue
        try:
            replace(REFERENCE, **merged, **changes).check(epochs)
        except ValueError:
            continue
        merged.update(changes)
    reference = next((s for s in summary if s["arm"] == "reference"), None)
    if reference and reference.get("bn_mean", -float("inf")) - reference["mean"] > min_gain:
        merged["bn_recalibration_batches"] = bn_batches
    return merged


def stacked(summary: list[dict], merged: dict, epochs: int) -> dict[str, dict]:
    """Round two: ``merged`` plus each factor change that did not join it yet helped a little (gain > 0), sets
    another field and can run in ``epochs``, as ``{"combined+<arm>": changes}``, best gain first."""
    found = {}
    for entry in sorted(summary, key=lambda s: -(s["gain"] or 0)):
        changes = ARMS[entry["arm"]][1] if entry["arm"] in FACTOR_ARMS else {}
        if not merged or not changes or (entry["gain"] or 0) <= 0 or set(changes) & set(merged):
            continue
        try:
            replace(REFERENCE, **merged, **changes).check(epochs)
        except ValueError:
            continue
        found[f"combined+{entry['arm']}"] = {**merged, **changes}
    return found


def goal(summary: list[dict], baseline_val: float, extra: dict[str, dict] | None = None) -> dict:
    """How the best recipe (by mean validation accuracy) stands against the baseline and the structured rival;
    empty when no recipe of the method ran."""
    ours = [s for s in summary if s["arm"] != RIVAL]
    if not ours:
        return {}
    best = max(ours, key=lambda s: s["mean"])
    rival = next((s for s in summary if s["arm"] == RIVAL), None)
    return {"best_arm": best["arm"], "best_changes": changes_of(best["arm"], extra), "best_val": best["mean"],
            "best_test": best["test_mean"], "below_baseline_val": baseline_val - best["mean"],
            "rival_val": rival["mean"] if rival else None, "rival_test": rival["test_mean"] if rival else None,
            "over_rival_val": best["mean"] - rival["mean"] if rival else None,
            "over_rival_test": best["test_mean"] - rival["test_mean"] if rival else None}
