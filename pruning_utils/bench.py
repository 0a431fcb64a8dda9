"""``python -m pruning_utils.bench``: runs :mod:`pruning_utils.studies.bench` (kept so recorded commands rerun)."""
from .studies.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
