"""The method (METHOD.md): read a model, attach branches, schedule alpha, prune, fold, and its settings.

``branches`` (units and the branched unit), ``schedules`` (alpha over the run), ``recipe`` (every setting of the
method, defaults = the best recipe measured), ``pruning`` (the loop, losses, teacher), ``folding`` (alpha = 0 to a
plain network), ``budget`` (keep ratios for a parameter budget), ``pipeline`` (attach, prune, fold, measure).
"""
