"""Structured pruning with parallel branches and an alpha schedule (see METHOD.md in the shared folder).

Top-level API: :func:`attach_branches`, :func:`set_alpha`, :func:`get_alpha`, :func:`prune`,
:func:`fold`. Submodules: ``config``, ``data``, ``models``, ``train``, ``pretrained``, ``branches``,
``schedules``, ``pruning``, ``folding``, ``metrics``, ``plots``, ``records``, ``ablations``. :class:`Recipe`: how
the method runs by default (the winner of notebook 08's ablation study).
"""
from .branches import attach_branches, freeze_original, get_alpha, set_alpha
from .experiments import Recipe
from .folding import fold, load_plain, save_plain
from .pruning import PruneConfig, prune, recalibrate_batchnorm
from .schedules import make_schedule

__all__ = ["attach_branches", "freeze_original", "get_alpha", "set_alpha", "fold", "load_plain", "save_plain",
           "PruneConfig", "Recipe", "prune", "recalibrate_batchnorm", "make_schedule"]
__version__ = "0.1.0"
