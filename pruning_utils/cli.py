"""``python -m pruning_utils.cli``: runs :mod:`pruning_utils.harness.cli` (kept so recorded commands rerun)."""
from .harness.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
