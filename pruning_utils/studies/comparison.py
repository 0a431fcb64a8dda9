"""Every pruning method at the same parameter budgets and the same number of epochs after the baseline.

:func:`compare` runs each (budget, method) arm from one trained baseline and writes each arm's result
atomically to a JSON file as soon as it is done, so an interrupted comparison resumes with the arms
left. The methods (:data:`METHODS`):

* ``branches``: the parallel-branch method with its default :class:`~pruning_utils.Recipe` (notebook
  08's winner) or the one given; in a residual network, the units a residual addition couples share a selection;
* ``branches_internal``: the same on the units that can get a learned E only (in a ResNet, the first convolution
  of each block), at a keep ratio that meets the same parameter budget;
* ``branches_projection``: ``branches`` with the seeds' form of the branch (``branch_kind="projection"``: a 1x1
  projection of the unit's own, shared layer), the same widths;
* ``branches_global``: ``branches`` with widths per unit from one global L1 criterion
  (:func:`~pruning_utils.method.budget.global_keep_ratios`) for the same parameter budget;
* ``branches_autopruner``: ``branches`` with the widths per unit that AutoPruner's search learned (the
  ``autopruner`` arm's), for the epochs left after that search (the same total);
* ``torch_pruning_l1``: Torch-Pruning's L1 filter pruning to the same widths, then fine-tuning;
  ``torch_pruning_l1_global`` the same to the widths of ``branches_global``;
* ``magnitude_finetune`` / ``magnitude_rewind``: iterative global magnitude pruning (unstructured) to the
  same number of non-zero parameters, retrained by fine-tuning or learning-rate rewinding;
* ``autopruner``: AutoPruner's search, then removal of the unselected channels and fine-tuning;
* ``autopruner_scratch``, ``scratch`` and ``global_scratch``: AutoPruner's architecture, the uniformly narrow one
  and the widths of ``branches_global``, trained from scratch for the baseline's epochs plus the pruning epochs (the
  same total budget; Liu et al., "Rethinking the value of network pruning").

:func:`compare_seeds` runs them with several seeds and chooses each method's learning rate on validation;
:func:`seed_summary` and :func:`paired_differences` give means, standard deviations and paired differences.
"""
from __future__ import annotations

import copy
import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..config import seed_everything
from ..engine.checkpoints import atomic_write
from ..engine.identity import fingerprint, loader_fingerprint
from ..engine.sizes import count_macs, count_parameters
from ..engine.tasks import CLASSIFICATION
from ..engine.train import check_resume, evaluate, fit
from ..method.budget import global_keep_ratios, keep_ratio_for_fraction, pruned_and_folded
from ..method.graph import branch_plan
from ..method.pipeline import prune_and_fold
from ..method.recipe import Recipe
from . import baselines

METHODS = ("branches", "branches_internal", "branches_projection", "branches_global", "torch_pruning_l1",
           "torch_pruning_l1_global", "magnitude_finetune", "magnitude_rewind", "autopruner", "autopruner_scratch",
           "branches_autopruner", "scratch", "global_scratch")
STRUCTURED = ("torch_pruning_l1", "torch_pruning_l1_global", "autopruner")  # structured, from the baseline
FROM_SCRATCH = ("scratch", "global_scratch")  # trained at ``scratch_lr``: no pruning learning rate to choose
NEEDS_AUTOPRUNER = ("autopruner_scratch", "branches_autopruner")  # they take the autopruner arm's widths


@dataclass
class ComparisonConfig:
    """One protocol for every method; nothing is tuned for one method more than for another."""

    epochs: int = 8  # training epochs after the baseline, for every method that starts from it
    scratch_epochs: int = 23  # from-scratch arms: the baseline's epochs plus ``epochs``
    lr: float = Recipe().lr  # peak (one-cycle) learning rate after the baseline, every method (the recipe's too)
    scratch_lr: float = 0.05  # peak learning rate from scratch (the baseline's)
    weight_decay: float = Recipe().weight_decay  # every method's (the recipe's too)
    recipe: Recipe = field(default_factory=Recipe)  # branches: how the method runs (teacher: the baseline)
    magnitude_rate: float = 0.2  # magnitude pruning: fraction of the remaining weights zeroed per round
    autopruner_epochs: int = 3  # AutoPruner: search epochs; the rest of ``epochs`` fine-tunes
    autopruner_mu: float = 1.0
    autopruner_lambda_every: int = 1  # lambda x10 every this many search epochs (the seeds: 20 of 350)
    autopruner_max_scale: float = 100.0

    def validate(self, methods=METHODS) -> None:
        """Raise a ValueError naming the first setting that does not fit (AutoPruner's: if ``methods`` run it)."""
        if self.epochs < 1 or self.scratch_epochs < 1:
            raise ValueError(f"epochs and scratch_epochs must be at least 1, got {self.epochs} and "
                             f"{self.scratch_epochs}")
        self.branch_recipe().check(self.epochs)
        if set(methods) & {"autopruner", *NEEDS_AUTOPRUNER} and not 0 < self.autopruner_epochs < self.epochs:
            raise ValueError(f"autopruner_epochs must leave fine-tuning epochs: in [1, {self.epochs - 1}], "
                             f"got {self.autopruner_epochs}")
        if "branches_autopruner" in methods:  # the branches train for the epochs the search leaves
            self.branch_recipe().check(self.epochs - self.autopruner_epochs)

    def branch_recipe(self) -> Recipe:
        """The branches' recipe under this protocol: its learning rate and weight decay are the protocol's."""
        return self.recipe.with_changes(lr=self.lr, weight_decay=self.weight_decay)


def check_methods(methods) -> list[str]:
    """``methods`` in the order they must run, or a ValueError naming the unknown ones."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    dependent = [m for m in NEEDS_AUTOPRUNER if m in methods]
    if dependent and "autopruner" not in methods:
        raise ValueError(f"{dependent} take the widths 'autopruner' finds: list 'autopruner' too")
    return [m for m in METHODS if m in methods]


@dataclass
class Arm:
    """What every method's arm gets: the baseline, the budget, the data and the protocol."""

    baseline: nn.Module
    keep_ratio: float
    target_params: int  # the folded parallel-branch network's parameters at ``keep_ratio``
    loaders: tuple
    input_shape: tuple[int, ...]
    config: ComparisonConfig
    checkpoint_dir: Path | None = None
    found: dict | None = None  # the autopruner arm's metrics, for ``autopruner_scratch``
    seed: int = 0
    progress: bool = True

    def checkpoint(self, name: str) -> Path | None:
        return self.checkpoint_dir / name if self.checkpoint_dir else None


def _scores(model: nn.Module, loaders) -> dict:
    _, val_loader, test_loader = loaders
    val, test = evaluate(model, val_loader, CLASSIFICATION), evaluate(model, test_loader, CLASSIFICATION)
    return {"val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"], "test_acc": test["acc"]}


def _fine_tune(model: nn.Module, arm: Arm, *, epochs: int, lr: float, checkpoint: Path | None = None) -> int:
    """One-cycle SGD for ``epochs``; with ``checkpoint``, resumable epoch by epoch."""
    fit(model, arm.loaders[0], arm.loaders[1], task=CLASSIFICATION, epochs=epochs, lr=lr,
        weight_decay=arm.config.weight_decay, scheduler="onecycle", checkpoint=checkpoint, progress=arm.progress)
    return epochs


def _prune_with_branches(arm: Arm, keep_ratio: float, *, shared_selection: bool, name: str, epochs: int | None = None,
                         **recipe_changes):
    result = prune_and_fold(arm.baseline, keep_ratio, arm.loaders,
                            recipe=arm.config.branch_recipe().with_changes(**recipe_changes),
                            epochs=epochs or arm.config.epochs, task=CLASSIFICATION, input_shape=arm.input_shape,
                            shared_selection=shared_selection, checkpoint_dir=arm.checkpoint(name),
                            progress=arm.progress)
    return result.folded, result.metrics["epochs"], {
        "fold_relative_max_difference": result.metrics["fold_relative_max_difference"], "keep_ratio": keep_ratio}


def _branches(arm: Arm):
    return _prune_with_branches(arm, arm.keep_ratio, shared_selection=True, name="branches")


def _branches_internal(arm: Arm):
    fraction = arm.target_params / count_parameters(arm.baseline)
    keep_ratio = keep_ratio_for_fraction(arm.baseline, fraction, shared_selection=False)
    reached = count_parameters(pruned_and_folded(arm.baseline, keep_ratio, shared_selection=False))
    if reached > 1.02 * arm.target_params:
        raise ValueError(f"pruning the internal units alone cannot meet the budget of {arm.target_params:,} "
                         f"parameters (it reaches {reached:,} at keep ratio {keep_ratio}); drop 'branches_internal' "
                         f"or choose a larger fraction")
    return _prune_with_branches(arm, keep_ratio, shared_selection=False, name="branches_internal")


def _branches_projection(arm: Arm):
    return _prune_with_branches(arm, arm.keep_ratio, shared_selection=True, name="branches_projection",
                                branch_kind="projection")


def _global_ratios(arm: Arm) -> dict[str, float]:
    return global_keep_ratios(arm.baseline, arm.target_params / count_parameters(arm.baseline))


def _widths(arm: Arm, ratios: dict[str, float]) -> dict[str, int]:
    """The kept channels per unit of per-unit ``ratios``, as the branch plan gives them."""
    return {e["name"]: e["kept"] for e in branch_plan(arm.baseline, ratios) if e["kind"] != "left alone"}


def _branches_global(arm: Arm):
    ratios = _global_ratios(arm)
    model, epochs, extra = _prune_with_branches(arm, ratios, shared_selection=True, name="branches_global")
    return model, epochs, {**extra, "widths": _widths(arm, ratios)}


def _branches_autopruner(arm: Arm):
    channels = {e["name"]: e["channels"] for e in branch_plan(arm.baseline, 1.0) if e["kind"] != "left alone"}
    widths = arm.found["widths"]
    ratios = {name: (k + 0.5) / channels[name] for name, k in widths.items()}  # floor(ratio * C) = k
    epochs = arm.config.epochs - arm.config.autopruner_epochs
    model, trained, extra = _prune_with_branches(arm, ratios, shared_selection=True, name="branches_autopruner",
                                                 epochs=epochs)
    return model, arm.config.autopruner_epochs + trained, {**extra, "widths": dict(widths)}


def _torch_pruning(arm: Arm, ratios=None, name: str = "torch_pruning_l1"):
    model = baselines.torch_pruning_l1(arm.baseline, arm.keep_ratio if ratios is None else ratios, arm.input_shape)
    epochs = _fine_tune(model, arm, epochs=arm.config.epochs, lr=arm.config.lr, checkpoint=arm.checkpoint(f"{name}.pt"))
    return model, epochs, {} if ratios is None else {"widths": _widths(arm, ratios)}


def _torch_pruning_global(arm: Arm):
    return _torch_pruning(arm, _global_ratios(arm), name="torch_pruning_l1_global")


def _magnitude(retraining: str):
    def run(arm: Arm):
        config = arm.config
        model = baselines.magnitude_prune(arm.baseline, arm.loaders[0], arm.target_params, config.epochs,
                                          lr=config.lr, retraining=retraining, rate=config.magnitude_rate,
                                          weight_decay=config.weight_decay, progress=arm.progress)
        rounds = len(baselines.magnitude_rounds(arm.baseline, arm.target_params, config.magnitude_rate))
        return model, config.epochs, {"rounds": rounds}
    return run


def _autopruner(arm: Arm):
    config = arm.config
    searched, scores = baselines.autopruner_search(
        arm.baseline, arm.loaders[0], arm.keep_ratio, config.autopruner_epochs, lr=config.lr, mu=config.autopruner_mu,
        lambda_every=config.autopruner_lambda_every, max_scale=config.autopruner_max_scale,
        weight_decay=config.weight_decay, progress=arm.progress)
    selection = baselines.autopruner_selection(arm.baseline, scores, arm.target_params)
    model = baselines.remove_channels(searched, selection["keep"], arm.input_shape)
    tuned = _fine_tune(model, arm, epochs=config.epochs - config.autopruner_epochs, lr=config.lr)
    return model, config.autopruner_epochs + tuned, {"selected_above_half": selection["selected_above_half"],
                                                     "widths": selection["widths"]}


def _from_scratch(method: str):
    def run(arm: Arm):
        if method == "scratch":
            shape = baselines.torch_pruning_l1(arm.baseline, arm.keep_ratio, arm.input_shape)
        elif method == "global_scratch":
            shape = baselines.torch_pruning_l1(arm.baseline, _global_ratios(arm), arm.input_shape)
        elif not arm.found or "widths" not in arm.found:
            raise ValueError("autopruner_scratch needs the widths of the autopruner arm at the same budget")
        else:
            shape = baselines.remove_channels(arm.baseline, {n: torch.arange(k) for n, k in arm.found["widths"].items()},
                                              arm.input_shape)
        model = baselines.reinitialise(shape, arm.seed)
        epochs = _fine_tune(model, arm, epochs=arm.config.scratch_epochs, lr=arm.config.scratch_lr,
                            checkpoint=arm.checkpoint(f"{method}.pt"))
        return model, epochs, {}
    return run


ARMS = {"branches": _branches, "branches_internal": _branches_internal, "branches_projection": _branches_projection,
        "branches_global": _branches_global, "branches_autopruner": _branches_autopruner,
        "torch_pruning_l1": _torch_pruning,
        "torch_pruning_l1_global": _torch_pruning_global, "magnitude_finetune": _magnitude("finetune"),
        "magnitude_rewind": _magnitude("rewind"), "autopruner": _autopruner,
        "autopruner_scratch": _from_scratch("autopruner_scratch"), "scratch": _from_scratch("scratch"),
        "global_scratch": _from_scratch("global_scratch")}


def run_arm(method: str, baseline: nn.Module, keep_ratio: float, loaders, input_shape, config: ComparisonConfig, *,
            found: dict | None = None, seed: int = 0, checkpoint_dir: Path | None = None,
            progress: bool = True) -> tuple[nn.Module, dict]:
    """Run one method at ``keep_ratio``'s parameter budget; return the final model and its metrics.

    ``found``: the ``autopruner`` arm's metrics (its widths), which ``autopruner_scratch`` retrains.
    ``checkpoint_dir``: the branches' stage checkpoints and the epoch checkpoints of the arms whose
    architecture is fixed before training (Torch-Pruning, from scratch) go there, so those arms resume.
    """
    if method not in ARMS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    target = count_parameters(pruned_and_folded(baseline, keep_ratio))
    arm = Arm(baseline, keep_ratio, target, loaders, tuple(input_shape), config,
              Path(checkpoint_dir) if checkpoint_dir else None, found, seed, progress)
    start = time.perf_counter()
    model, epochs, extra = ARMS[method](arm)
    seconds = time.perf_counter() - start
    params = baselines.nonzero_parameters(model) if method.startswith("magnitude") else count_parameters(model)
    metrics = {"method": method, "keep_ratio": keep_ratio, "target_params": target, "params": params,
               "macs": count_macs(model, input_shape), "epochs": epochs, "train_seconds": seconds,
               **_scores(model, loaders), **extra}
    return model, metrics


def compare(baseline: nn.Module, loaders, input_shape, fractions, methods=METHODS,
            config: ComparisonConfig | None = None, *, results_dir: str | Path, resume: bool = True, seed: int = 0,
            progress: bool = True) -> list[dict]:
    """Run every method at every parameter fraction (e.g. 0.35, 0.12) from ``baseline``; return one row each.

    Each arm's row is written to ``results_dir/<fraction>_<method>.json`` when it ends, with what it was made from
    (the baseline's and the data's fingerprints, the seed, the protocol); with ``resume`` an arm whose file exists
    is read, not rerun, after checking that it was made from the same
    (:class:`~pruning_utils.engine.train.ResumeMismatchError` otherwise), and
    an interrupted arm continues from its checkpoints (``results_dir/<fraction>_checkpoints``); without it every
    arm starts afresh. Rows carry ``fraction`` and ``param_fraction`` (of the baseline's parameters) beside the
    metrics of :func:`run_arm`.
    """
    config = config or ComparisonConfig()
    methods = check_methods(methods)
    config.validate(methods)
    for fraction in fractions:
        if not 0 < fraction < 1:
            raise ValueError(f"parameter fractions must be in (0, 1), got {fraction}")
    results_dir = Path(results_dir)
    total = count_parameters(baseline)
    made_from = arm_identity(baseline, loaders, config, seed)
    rows = []
    for fraction in fractions:
        keep_ratio = keep_ratio_for_fraction(baseline, fraction)
        checkpoints = results_dir / f"{fraction:g}_checkpoints"
        found = None
        for method in methods:
            path = results_dir / f"{fraction:g}_{method}.json"
            if resume and path.is_file():
                row = json.loads(path.read_text())
                check_resume(row.get("made_from"), made_from, path)
            else:
                if not resume:  # start the arm afresh: forget its epoch and stage checkpoints
                    forget(checkpoints / method, checkpoints / f"{method}.pt")
                seed_everything(seed)
                _, metrics = run_arm(method, copy.deepcopy(baseline), keep_ratio, loaders, input_shape, config,
                                     found=found, seed=seed, progress=progress, checkpoint_dir=checkpoints)
                text = json.dumps({"fraction": fraction, "param_fraction": metrics["params"] / total, **metrics,
                                   "config": asdict(config), "made_from": made_from}, indent=2, default=float)
                atomic_write(path, lambda tmp: Path(tmp).write_text(text))
                row = json.loads(text)  # as a resumed run reads it
            found = row if method == "autopruner" else found
            rows.append(row)
    return rows


def compare_seeds(baseline: nn.Module, make_loaders, input_shape, fractions, methods=METHODS,
                  config: ComparisonConfig | None = None, *, seeds=(0,), lrs=None, results_dir: str | Path,
                  resume: bool = True, progress: bool = True) -> list[dict]:
    """:func:`compare` with every seed of ``seeds``, each method's learning rate chosen from ``lrs``.

    ``make_loaders(seed)`` gives (train, val, test) for a seed: the seed changes the order and augmentation of the
    training batches and every random initialisation (branches, from-scratch weights), never the baseline or the
    split. With the first seed every method that starts from the baseline runs at every learning rate of ``lrs``
    (None: ``config.lr`` alone); the one with the best validation accuracy is its choice (the arms of
    :data:`NEEDS_AUTOPRUNER` take ``autopruner``'s), and the other seeds run at it. The :data:`FROM_SCRATCH` arms train at
    ``config.scratch_lr`` and run once per seed (in the folder of ``config.lr``). Results go to
    ``results_dir/seed<seed>_lr<lr>/``. Rows are :func:`compare`'s with ``seed``, ``lr`` (the rate the arm trained
    at) and ``chosen`` (whether it is the method's choice at that fraction).
    """
    config = config or ComparisonConfig()
    methods, seeds, lrs = check_methods(methods), list(seeds), list(lrs or [config.lr])
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if any(not 0 < lr < 10 for lr in lrs):
        raise ValueError(f"learning rates must be in (0, 10), got {lrs}")
    for lr in lrs:  # every setting is checked before the first arm runs
        replace(config, lr=lr).validate(methods)

    def run(seed, lr, fractions, group):
        found = compare(baseline, make_loaders(seed), input_shape, fractions, group, replace(config, lr=lr),
                        results_dir=Path(results_dir) / f"seed{seed}_lr{lr:g}", resume=resume, seed=seed,
                        progress=progress)
        return [{**row, "seed": seed, "lr": lr} for row in found]

    tuned = [m for m in methods if m not in FROM_SCRATCH]
    scratch = [m for m in methods if m in FROM_SCRATCH]
    first = [row for lr in lrs for row in (run(seeds[0], lr, fractions, tuned) if tuned else [])]
    best: dict[tuple, dict] = {}
    for row in first:
        key = (row["fraction"], row["method"])
        if row["method"] not in NEEDS_AUTOPRUNER and (key not in best or row["val_acc"] > best[key]["val_acc"]):
            best[key] = row

    def lr_of(fraction, method):  # the arms on autopruner's widths take its learning rate
        return best[(fraction, "autopruner" if method in NEEDS_AUTOPRUNER else method)]["lr"]

    rows = [{**row, "chosen": row["lr"] == lr_of(row["fraction"], row["method"])} for row in first]
    for seed in seeds:
        rows += [{**row, "lr": config.scratch_lr, "chosen": True}  # the rate they train at
                 for row in (run(seed, config.lr, fractions, scratch) if scratch else [])]
        if seed == seeds[0]:
            continue
        for fraction in fractions:
            for lr in dict.fromkeys(lr_of(fraction, m) for m in tuned):
                group = [m for m in tuned if lr_of(fraction, m) == lr]
                rows += [{**row, "chosen": True} for row in run(seed, lr, [fraction], group)]
    return rows


def _chosen_by_arm(rows: list[dict]) -> dict[tuple, list[dict]]:
    arms: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("chosen", True):
            arms.setdefault((row["fraction"], row["method"]), []).append(row)
    return arms


def _spread(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def seed_summary(rows: list[dict]) -> list[dict]:
    """One row per (fraction, method) at its chosen learning rate: ``val_acc``, ``test_acc``, ``params``, ``macs``
    and ``train_seconds`` as means over the seeds, ``val_std`` and ``test_std`` (sample standard deviations; None
    with one seed), the seeds' test accuracies, and the learning rates tried with the first seed's validation
    accuracy at each (``lr_val``)."""
    table = []
    for (fraction, method), runs in _chosen_by_arm(rows).items():
        tried = {r["lr"]: r["val_acc"] for r in rows if (r["fraction"], r["method"]) == (fraction, method)
                 and r.get("seed") == runs[0].get("seed") and "lr" in r}
        mean = {key: statistics.fmean(r[key] for r in runs) for key in ("val_acc", "test_acc", "params", "macs",
                                                                        "train_seconds")}
        table.append({"fraction": fraction, "method": method, "lr": runs[0].get("lr"), "seeds": len(runs), **mean,
                      "val_std": _spread([r["val_acc"] for r in runs]),
                      "test_std": _spread([r["test_acc"] for r in runs]),
                      "test_values": [r["test_acc"] for r in runs], "lr_val": tried,
                      **({"widths": runs[0]["widths"]} if "widths" in runs[0] else {})})
    return table


def paired_differences(rows: list[dict], method: str = "branches", others=None) -> list[dict]:
    """At each fraction, ``method`` minus each other method (or those in ``others``), seed by seed over the seeds
    both ran at their chosen learning rates: mean and standard deviation of the test and validation differences."""
    arms = _chosen_by_arm(rows)
    table = []
    for (fraction, name), own in arms.items():
        if name != method:
            continue
        mine = {r["seed"]: r for r in own}
        for (other_fraction, other), theirs in arms.items():
            if other_fraction != fraction or other == method or (others is not None and other not in others):
                continue
            pairs = [(mine[r["seed"]], r) for r in theirs if r["seed"] in mine]
            if not pairs:
                continue
            test = [a["test_acc"] - b["test_acc"] for a, b in pairs]
            val = [a["val_acc"] - b["val_acc"] for a, b in pairs]
            table.append({"fraction": fraction, "method": method, "other": other, "seeds": len(pairs),
                          "test_diff": statistics.fmean(test), "test_diff_std": _spread(test), "test_diffs": test,
                          "val_diff": statistics.fmean(val), "val_diff_std": _spread(val)})
    return table


def arm_identity(baseline: nn.Module, loaders, config, seed: int) -> dict:
    """What an arm's result depends on beyond its method and budget: baseline, data, protocol and seed."""
    settings = asdict(config)
    if isinstance(getattr(config, "recipe", None), Recipe):  # the recipe as runs store it (Recipe.settings)
        settings["recipe"] = config.recipe.settings()
    return {"baseline": fingerprint(baseline), "data": [loader_fingerprint(loader) for loader in loaders],
            "seed": seed, "config": settings}


def forget(*paths: Path) -> None:
    """Delete these checkpoint files or folders (an arm started afresh)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def zeros_speed(baseline: nn.Module, fractions, input_shape, batch_sizes=(1, 32), *, threads: int | None = None,
                min_run_time: float = 1.0, repeats: int = 3) -> list[dict]:
    """CPU time per image of the baseline, of magnitude pruning's zeros and of filter pruning, at each fraction.

    Speed does not depend on training, so the pruned models are made without it. ``speedup``: the
    baseline's time over the model's, at the same batch size (median of ``repeats`` timings, see
    :func:`pruning_utils.studies.bench.time_per_image`).
    """
    from .bench import time_per_image

    def timing(model, batch):
        return time_per_image(copy.deepcopy(model), input_shape, batch, threads=threads, min_run_time=min_run_time,
                              repeats=repeats)["s_per_image"]

    reference = {b: timing(baseline, b) for b in batch_sizes}
    rows = []
    for fraction in fractions:
        keep_ratio = keep_ratio_for_fraction(baseline, fraction)
        target = count_parameters(pruned_and_folded(baseline, keep_ratio))
        variants = {"magnitude (zeros)": baselines.magnitude_prune(baseline, None, target, 0, progress=False),
                    "filter-pruned": baselines.torch_pruning_l1(baseline, keep_ratio, input_shape)}
        for name, model in variants.items():
            params = baselines.nonzero_parameters(model)
            for batch in batch_sizes:
                seconds = timing(model, batch)
                rows.append({"fraction": fraction, "variant": name, "batch_size": batch, "params": params,
                             "macs": count_macs(model, input_shape), "s_per_image": seconds,
                             "baseline_s_per_image": reference[batch], "speedup": reference[batch] / seconds})
    return rows


def unit_widths(baseline: nn.Module, rows: list[dict]) -> list[dict]:
    """Channels kept per unit by every arm of ``rows`` that allocated its own widths, beside the uniform widths of
    the same budget (``uniform``): one row per (fraction, method, unit) with ``kept`` and ``channels``."""
    channels = {e["name"]: e["channels"] for e in branch_plan(baseline, 1.0) if e["kind"] != "left alone"}
    table = []
    for fraction in dict.fromkeys(r["fraction"] for r in rows if "widths" in r):
        uniform = {e["name"]: e["kept"] for e in branch_plan(baseline, keep_ratio_for_fraction(baseline, fraction))
                   if e["name"] in channels}
        found = {"uniform": uniform, **{r["method"]: r["widths"] for r in rows
                                        if r["fraction"] == fraction and "widths" in r}}
        table += [{"fraction": fraction, "method": method, "unit": unit, "kept": widths.get(unit, channels[unit]),
                   "channels": channels[unit]} for method, widths in found.items() for unit in channels]
    return table


def gaps(rows: list[dict], method: str = "branches", among=None) -> list[dict]:
    """At each fraction, ``method``'s accuracy minus that of the best other method (by validation accuracy), or
    the best of those named in ``among`` (e.g. :data:`STRUCTURED`); positive where ``method`` leads."""
    table = []
    for fraction in dict.fromkeys(r["fraction"] for r in rows):
        own = [r for r in rows if r["fraction"] == fraction and r["method"] == method]
        others = [r for r in rows if r["fraction"] == fraction and r["method"] != method
                  and (among is None or r["method"] in among)]
        if not own or not others:
            continue
        best = max(others, key=lambda r: r["val_acc"])
        table.append({"fraction": fraction, "best_other": best["method"], f"{method}_val_acc": own[0]["val_acc"],
                      "best_other_val_acc": best["val_acc"], "val_gap": own[0]["val_acc"] - best["val_acc"],
                      "test_gap": own[0]["test_acc"] - best["test_acc"]})
    return table
