"""``python -m pruning_utils.sweep``: runs :mod:`pruning_utils.harness.sweep` (kept so recorded commands rerun)."""
from .harness.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
