"""Run the numbered notebooks headless with papermill: ``python -m pruning_utils.notebooks``.

Executed copies go to ``runs/`` (git-ignored); figures and metrics JSON go where each notebook's
``OUTPUT_DIR`` parameter says (the quick profile: ``figures/quick/``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import NOTEBOOKS_DIR, RUNS_DIR


def numbered_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The notebooks whose names start with a number, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(notebook: Path) -> set[str]:
    """Names declared in the notebook's ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def run_notebook(notebook: Path, output: Path, parameters: dict | None = None, log_output: bool = False) -> Path:
    """Execute ``notebook`` with ``parameters`` (unknown names are an error) into ``output``."""
    import papermill

    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - notebook_parameters(notebook))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameters {unknown}; it has {sorted(notebook_parameters(notebook))}")
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                               cwd=str(notebook.parent), log_output=log_output, progress_bar=False)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="run profile passed to every notebook (default: quick)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook name prefixes to run, e.g. 01 02")
    parser.add_argument("--out", type=Path, default=RUNS_DIR, help=f"folder for executed copies (default: {RUNS_DIR})")
    parser.add_argument("--progress", action="store_true", help="keep the notebooks' progress bars on")
    args = parser.parse_args(argv)
    available = numbered_notebooks()
    unmatched = [prefix for prefix in args.only or [] if not any(p.name.startswith(prefix) for p in available)]
    notebooks = [p for p in available if p.name.startswith(tuple(args.only or [""]))]
    if unmatched or not notebooks:
        parser.error(f"no numbered notebook in {NOTEBOOKS_DIR} matches {unmatched or args.only}; "
                     f"available: {', '.join(p.name for p in available) or 'none'}")
    total = time.perf_counter()
    for notebook in notebooks:
        start = time.perf_counter()
        parameters = {"PROFILE": args.profile, "PROGRESS": args.progress}
        if "INTERACTIVE" in notebook_parameters(notebook):
            parameters["INTERACTIVE"] = False  # no widget front end headless
        run_notebook(notebook, args.out / notebook.name, parameters)
        print(f"{notebook.name}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"all {len(notebooks)} notebooks: {time.perf_counter() - total:.0f} s; executed copies in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
