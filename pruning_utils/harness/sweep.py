"""Run a notebook over a grid of parameters with papermill: ``python -m pruning_utils.sweep NOTEBOOK GRID.yaml``.

The grid file names fixed parameters and the axes of the grid::

    fixed:                      # passed to every run
      PROFILE: quick
      EPOCHS: 4
    grid:                       # every combination of these values is one run
      PRUNE_LR: [0.01, 0.02]
      SEEDS: [[0], [1]]

Every run writes its executed notebook and the notebook's own metrics JSON (its ``OUTPUT_DIR`` and ``RUN_NAME``
parameters are set by the sweep) into the sweep's folder. The executed notebook is written as
``<run>.running.ipynb`` and renamed to ``<run>.ipynb`` once the run succeeded (``<run>.failed.ipynb`` if not);
runs with both ``<run>.ipynb`` and ``<run>.json`` are skipped, so a sweep resumes, even one killed mid-way, losing
only the runs in flight. At the end ``summary.csv`` holds one row per run (its grid values and every scalar
metric) and ``summary.png`` plots the chosen metric per run. Unknown parameter names are an error before anything
runs. ``--jobs`` worker processes run the runs, each with its own working directory and environment, through which
its kernels get an equal share of the CPU threads; the workers stop when the sweep's process dies.
``sweeps/08_ablations_cifar10.yaml`` splits notebook 08's ablation study into one run per (seed, arm).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

from ..config import RUNS_DIR, resolve_path
from .notebooks import notebook_parameters, run_notebook
from .records import slug

SET_BY_SWEEP = ("OUTPUT_DIR", "RUN_NAME", "PROGRESS")


def read_grid(path: str | Path) -> tuple[dict, dict]:
    """(fixed, grid) from a YAML grid file; raise a ValueError that says what is malformed."""
    spec = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(spec, dict) or set(spec) - {"fixed", "grid"}:
        raise ValueError(f"{path}: a grid file is a mapping with the keys 'fixed' and 'grid', got {spec!r}")
    fixed, grid = spec.get("fixed") or {}, spec.get("grid") or {}
    if not isinstance(fixed, dict) or not isinstance(grid, dict):
        raise ValueError(f"{path}: 'fixed' and 'grid' must map parameter names to values")
    bad = [name for name, values in grid.items() if not isinstance(values, list) or not values]
    if bad:
        raise ValueError(f"{path}: each grid axis needs a non-empty list of values; not so for {bad}")
    return fixed, grid


def check_names(notebook: Path, fixed: dict, grid: dict) -> None:
    """Raise a ValueError naming every parameter the notebook does not declare, or that the sweep sets itself."""
    known = notebook_parameters(notebook)
    names = set(fixed) | set(grid)
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(f"{notebook.name} has no parameters {unknown}; it has {sorted(known)}")
    reserved = sorted(names & set(SET_BY_SWEEP))
    if reserved:
        raise ValueError(f"the sweep sets {reserved} itself; remove them from the grid file")
    overlap = sorted(set(fixed) & set(grid))
    if overlap:
        raise ValueError(f"{overlap} are both fixed and grid axes; keep each in one place")


def plan_runs(fixed: dict, grid: dict) -> list[tuple[str, dict]]:
    """(run name, parameters) for every combination of the grid's values, in a stable order."""
    axes = list(grid)
    runs = []
    for values in itertools.product(*(grid[a] for a in axes)):
        chosen = dict(zip(axes, values))
        name = "__".join(f"{a}={slug(v)}" for a, v in chosen.items()) or "run"
        runs.append((name, {**fixed, **chosen}))
    return runs


def flatten(metrics: dict, prefix: str = "") -> dict:
    """The numbers of a nested dict as {"a.b.c": value}; lists, strings and booleans are left out."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def run_sweep(notebook: str | Path, grid_file: str | Path, out: str | Path | None = None, jobs: int = 1,
              metric: str | None = None) -> list[dict]:
    """Run the grid (skipping finished runs), then write ``summary.csv`` and ``summary.png``; return the rows."""
    notebook = resolve_path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    fixed, grid = read_grid(grid_file)
    check_names(notebook, fixed, grid)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    out = Path(out) if out else RUNS_DIR / "sweeps" / f"{notebook.stem}_{Path(grid_file).stem}"
    out.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(fixed, grid)
    todo = [(name, params) for name, params in runs if not finished(out, name, params)]
    threads = max(1, (os.cpu_count() or 1) // min(jobs, max(1, len(todo))))
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run with {jobs} at once in {out}")
    failed = run_all(notebook, out, todo, jobs=jobs, threads=threads)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(todo)} runs failed: {failed}; their executed notebooks "
                           f"(<run>.failed.ipynb in {out}) show the error; rerun the sweep to retry them "
                           f"(finished runs are skipped)")
    rows = [{"run": name, **{a: params[a] for a in grid},
             **flatten(json.loads((out / f"{name}.json").read_text())["metrics"])} for name, params in runs]
    write_summary(rows, out, list(grid), metric)
    return rows


def finished(out: Path, name: str, parameters: dict) -> bool:
    """Whether run ``name`` completed: its executed notebook and its metrics JSON are both there. A finished run
    recorded with other values of the sweep's parameters (another grid file's run in this folder) is an error,
    never taken for this one."""
    record = out / f"{name}.json"
    if not ((out / f"{name}.ipynb").is_file() and record.is_file()):
        return False
    recorded = json.loads(record.read_text()).get("parameters", {})
    differ = {k: (recorded.get(k), v) for k, v in json.loads(json.dumps(parameters)).items() if recorded.get(k) != v}
    if differ:
        listed = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise ValueError(f"{record} was recorded with other parameters ({listed}): use another output folder "
                         f"(--out) or delete that run to rerun it")
    return True


def run_all(notebook: Path, out: Path, todo: list[tuple[str, dict]], *, jobs: int, threads: int) -> list[str]:
    """Run ``todo`` in ``jobs`` worker processes with ``threads`` CPU threads each; return the failed runs' names."""
    errors = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(execute, notebook, out, name, params): name for name, params in todo}
        for future in as_completed(futures):
            name = futures[future]
            try:
                errors[name] = future.result()
            except Exception as err:  # noqa: BLE001 - a worker that died fails its run only
                errors[name] = f"{type(err).__name__}: {err}"
            print(f"failed: {name}: {errors[name]}" if errors[name] else f"done: {name}", flush=True)
    return [name for name, _ in todo if errors[name]]


def _start_worker(threads: int) -> None:
    """Give this worker's kernels ``threads`` CPU threads, and end the worker when the sweep's process is gone."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # orphaned: the sweep was killed; the kernel sees this process go and exits too


def execute(notebook: Path, out: Path, name: str, params: dict) -> str | None:
    """Run one notebook into ``<name>.running.ipynb``, renamed once it ends; return the error if it failed."""
    running = out / f"{name}.running.ipynb"
    try:
        run_notebook(notebook, running, {**params, "OUTPUT_DIR": str(out), "RUN_NAME": name, "PROGRESS": False})
    except Exception as err:  # noqa: BLE001 - any failure of one run is reported once all have run
        if running.is_file():
            running.replace(out / f"{name}.failed.ipynb")
        return f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}"
    running.replace(out / f"{name}.ipynb")
    (out / f"{name}.failed.ipynb").unlink(missing_ok=True)
    return None


def write_summary(rows: list[dict], out: Path, axes: list[str], metric: str | None = None) -> None:
    """``summary.csv`` (all columns) and ``summary.png`` (``metric`` per run; default: the first validation metric)."""
    import matplotlib.pyplot as plt

    from .plots import save

    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    numeric = [c for c in columns if c not in axes and c != "run" and all(isinstance(r.get(c), (int, float)) for r in rows)]
    metric = metric or next((c for c in numeric if c.endswith(("val_acc", "val_psnr"))), numeric[0] if numeric else None)
    if metric is None:
        return
    if metric not in columns:
        raise ValueError(f"metric {metric!r} is not in the runs' metrics; choose one of {numeric}")
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows)), 4))
    ax.bar(range(len(rows)), [r.get(metric, float("nan")) for r in rows])
    ax.set_xticks(range(len(rows)), [r["run"] for r in rows], rotation=45, ha="right", fontsize=7)
    ax.set(ylabel=metric, title=f"{len(rows)} runs")
    fig.tight_layout()
    save(fig, out / "summary.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", help="the notebook to run (a relative path is taken from the repository root)")
    parser.add_argument("grid", help="YAML grid file with 'fixed' and 'grid'")
    parser.add_argument("--out", type=Path, default=None, help="folder of the sweep (default: runs/sweeps/<notebook>_<grid>)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--metric", default=None, help="metric plotted in summary.png, e.g. runs.l1.val_acc")
    args = parser.parse_args(argv)
    try:
        rows = run_sweep(args.notebook, args.grid, args.out, args.jobs, args.metric)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{len(rows)} runs summarised")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
