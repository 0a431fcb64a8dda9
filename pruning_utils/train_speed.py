"""``python -m pruning_utils.train_speed``: runs :mod:`pruning_utils.studies.train_speed` (kept so recorded commands rerun)."""
from .studies.train_speed import main

if __name__ == "__main__":
    raise SystemExit(main())
