"""Around the experiments: baselines trained or loaded, records, figures, widgets, notebook runs, sweeps, the CLI.

``pretrained`` (train-or-load baselines), ``records`` (the metrics JSON of every run), ``plots``, ``widgets``
(the alpha slider), ``notebooks`` (run the numbered notebooks), ``sweep`` (a notebook over a grid), ``cli``.
"""
