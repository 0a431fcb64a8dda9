"""Checkpoints: atomic, locked writes; weights-only loading that names a damaged file; state_dicts that must fit;
RNG state."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .distributed import is_main, unwrap

RERUN_HINT = "delete it, and the run that wrote it starts that step afresh"


class ConcurrentWriteError(RuntimeError):
    """Another process is writing the same output file right now."""


class DamagedCheckpointError(ValueError):
    """The file is not a whole torch checkpoint (truncated, corrupt, or another kind of file)."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(temporary path)`` beside ``path``, then rename it into place: a reader never sees half a file
    (on rank 0 only when several processes run).

    While writing, the process holds ``<path>.lock`` (:func:`exclusive`), so two runs writing the same output at
    once fail instead of overwriting each other; temporaries of ``path`` left by a killed writer are removed
    first (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    if not is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path):
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive ``fcntl.flock`` on ``<path>.lock`` (holding our pid), or raise
    :class:`ConcurrentWriteError` at once if another process holds it; the lock file is removed on release."""
    lock = path.with_name(path.name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConcurrentWriteError(f"another process is writing {path} (pid {holder}); wait for it to end or "
                                       f"stop it, or give this run another output path") from None
        if _same_file(fd, lock):
            break
        os.close(fd)  # its holder released and removed it meanwhile: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.unlink(lock)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries ``<path name>.<pid>.<random>.tmp`` of :func:`atomic_write` whose writer process is
    no longer running (killed mid-write); return them. Called with ``path``'s lock held, so no live writer of
    ``path`` can own one; the pid check also spares a writer that bypassed the lock."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)\.[^.]+\.tmp")
    stale = [f for f in path.parent.iterdir() if (m := pattern.fullmatch(f.name)) and not _running(int(m.group(1)))]
    for file in stale:
        file.unlink(missing_ok=True)
    return stale


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def save_checkpoint(path: str | Path, **state) -> Path:
    """Write ``state`` with torch.save, atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location="cpu", hint: str = RERUN_HINT) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code is unpickled).

    A file that is not a whole torch archive raises :class:`DamagedCheckpointError` naming it and ending in
    ``hint`` (what to do about it); other errors get a note naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        problem = _archive_problem(path)
        if problem is None:
            err.add_note(f"while loading the checkpoint {path}")
            raise
        raise DamagedCheckpointError(f"{path} is damaged or not a torch checkpoint (e.g. an interrupted copy): "
                                     f"{problem}. To fix: {hint}") from err


def _archive_problem(path: Path) -> str | None:
    """Why ``path`` is not a torch checkpoint archive, or None when its zip directory looks whole."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "it is not a whole zip archive"
    if not any(name.rpartition("/")[2] == "data.pkl" for name in names):
        return "it is a zip archive without torch's data.pkl (another kind of file, such as an .npz)"
    return None


def load_model_state(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Load a state_dict (into the module inside DDP), or raise a ValueError that lists what does not fit the model."""
    model = unwrap(model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or reshaped:
        lines = [f"{source} does not fit this model (was it saved from another architecture, width or "
                 f"pruning state? build the model with the checkpoint's settings):"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped)):
            if items:
                lines.append(f"  {label} ({len(items)}): " + ", ".join(items[:5]) + (" ..." if len(items) > 5 else ""))
        raise ValueError("\n".join(lines))
    model.load_state_dict(state)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
