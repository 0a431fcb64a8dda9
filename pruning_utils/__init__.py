"""Structured pruning with parallel branches and an alpha schedule (see METHOD.md in the shared folder).

Top-level API: :func:`attach_branches`, :func:`set_alpha`, :func:`get_alpha`, :func:`prune`, :func:`fold`,
:func:`prune_and_fold`, :func:`branch_plan`, and :class:`Recipe`: every setting of the method, whose defaults are the best recipe
measured (notebook 08's ablation study). Subpackages by role: ``method`` (branches, schedules, recipe, the pruning
loop, folding), ``engine`` (data, models, tasks, training, checkpoints, speed, processes, sizes), ``studies``
(rivals, comparison, ablations, benchmarks) and ``harness`` (baselines, records, plots, widgets, notebook runs,
sweeps, CLI); ``config`` holds the paths, profiles, device and seeding.
"""
from .method.branches import attach_branches, freeze_original, get_alpha, set_alpha
from .method.folding import fold, load_plain, save_plain
from .method.graph import branch_plan
from .method.pipeline import prune_and_fold
from .method.pruning import PruningFailedError, prune, recalibrate_batchnorm
from .method.recipe import PruneConfig, Recipe
from .method.schedules import make_schedule

__all__ = ["attach_branches", "branch_plan", "freeze_original", "get_alpha", "set_alpha", "fold", "load_plain", "save_plain",
           "prune_and_fold", "PruneConfig", "Recipe", "PruningFailedError", "prune", "recalibrate_batchnorm",
           "make_schedule"]
__version__ = "0.1.0"
