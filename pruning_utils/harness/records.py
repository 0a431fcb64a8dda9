"""Run records: the metrics JSON every notebook writes beside its figures, with parameters and machine."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shlex
from pathlib import Path

import torch

from ..config import FIGURES_DIR, QUICK_FIGURES_DIR, REPO_ROOT
from ..engine.checkpoints import atomic_write
from ..engine.distributed import is_main


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def output_dir(profile: str, requested: str | None = None) -> Path:
    """Where a notebook writes figures and records: ``requested``, else figures/quick (git-ignored) for the
    quick profile and figures/ for the others."""
    if requested:
        path = Path(requested)
        path = path if path.is_absolute() else REPO_ROOT / path
    else:
        path = QUICK_FIGURES_DIR if profile == "quick" else FIGURES_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def papermill_command(notebook: str, parameters: dict) -> str:
    """The papermill command that reruns ``notebook`` with ``parameters``."""
    args = " ".join(f"-y {shlex.quote(k + ': ' + json.dumps(v))}" if isinstance(v, (list, dict))
                    else f"-p {k} {shlex.quote(str(v))}" for k, v in parameters.items())
    return f"papermill notebooks/{notebook} runs/{Path(notebook).stem}.ipynb -k python3 {args}"


def write_record(path: str | Path, notebook: str, parameters: dict, metrics: dict, **extra) -> Path:
    """Write a JSON record of a run: metrics, exact parameters, the command that reruns it, the machine
    (on rank 0 only when several processes run)."""
    path = Path(path)
    if not is_main():
        return path
    record = {"notebook": notebook, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": papermill_command(notebook, parameters), "parameters": parameters,
              "machine": machine(), "metrics": metrics, **extra}
    text = json.dumps(record, indent=2, default=float) + "\n"
    # atomic and locked: a reader (or a resumed sweep) never sees half a record, two writers never mix theirs
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_record(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


RUN_ONLY_PARAMETERS = ("OUTPUT_DIR", "PROGRESS", "RESUME", "INTERACTIVE", "RUN_NAME")  # every notebook's


def settings_key(parameters: dict, profile, *, ignore: tuple[str, ...] = (), length: int = 10) -> str:
    """A short, stable hash of a run's settings (its parameters, less RUN_ONLY_PARAMETERS and the caller's
    ``ignore``, the names that do not change results, and the profile that fills their None values): names
    checkpoint folders so that a run with other settings never resumes them."""
    import dataclasses
    import hashlib

    settings = {k: v for k, v in parameters.items() if k not in RUN_ONLY_PARAMETERS + tuple(ignore)}
    settings["profile"] = dataclasses.asdict(profile)
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:length]


def slug(value, length: int = 40) -> str:
    """``value`` as part of a file name: lists and dicts as JSON, every character but letters, digits and ``.+-``
    as ``-``, at most ``length`` characters."""
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)[:length]


def format_table(rows: list[dict], columns: list[str], formats: dict[str, str] | None = None) -> str:
    """A plain-text table of ``rows`` (dicts) with the given ``columns``; ``formats`` maps column to format spec."""
    formats = formats or {}
    cells = [[format(row.get(c, ""), formats.get(c, "")) if row.get(c) is not None else "" for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
