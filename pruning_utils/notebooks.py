"""``python -m pruning_utils.notebooks``: runs :mod:`pruning_utils.harness.notebooks` (kept so recorded commands rerun)."""
from .harness.notebooks import main

if __name__ == "__main__":
    raise SystemExit(main())
