"""Nothing silent: damaged checkpoints, interrupted and concurrent writes, bad notebook parameters."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from pruning_utils.engine import checkpoints
from pruning_utils.method import folding

# a writer that starts a temporary, says so, and hangs in the middle of writing it
HANGING_WRITER = """
import sys, time
from pathlib import Path
from pruning_utils.engine.checkpoints import atomic_write

def write(tmp):
    Path(tmp).write_bytes(b"half a checkpoint")
    print("writing", flush=True)
    time.sleep(60)

atomic_write(sys.argv[1], write)
"""


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".tmp")


@pytest.fixture
def hanging_writer(tmp_path):
    """A subprocess stuck in the middle of writing ``tmp_path / "c.pt"``; killed at the end."""
    process = subprocess.Popen([sys.executable, "-c", HANGING_WRITER, str(tmp_path / "c.pt")], stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, text=True)
    assert process.stdout.readline().strip() == "writing"
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:-10], lambda b: b"", lambda b: b"text"])
def test_damaged_checkpoint_names_the_file_and_says_to_delete_it(tmp_path, damage):
    path = checkpoints.save_checkpoint(tmp_path / "stage_01.pt", model={"w": torch.zeros(100)})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(checkpoints.DamagedCheckpointError) as err:
        checkpoints.load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "damaged or not a torch checkpoint" in message and "delete it" in message


def test_other_load_errors_keep_their_type_and_name_the_file(tmp_path):
    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"x": Code()}, tmp_path / "code.pt")
    with pytest.raises(Exception, match="Weights only") as err:
        checkpoints.load_checkpoint(tmp_path / "code.pt")
    assert str(tmp_path / "code.pt") in " ".join(getattr(err.value, "__notes__", []))


def test_write_killed_midway_leaves_a_temporary_the_next_write_removes(tmp_path, hanging_writer):
    assert len(_temporaries(tmp_path)) == 1
    os.kill(hanging_writer.pid, signal.SIGKILL)
    hanging_writer.wait()
    assert len(_temporaries(tmp_path)) == 1 and not (tmp_path / "c.pt").exists()
    (tmp_path / "other.pt.1.abc.tmp").write_text("not this target's")
    checkpoints.save_checkpoint(tmp_path / "c.pt", step=1)
    assert checkpoints.load_checkpoint(tmp_path / "c.pt") == {"step": 1}
    assert _temporaries(tmp_path) == ["other.pt.1.abc.tmp"]
    assert not (tmp_path / "c.pt.lock").exists()


def test_a_live_writers_temporary_is_kept(tmp_path):
    live = tmp_path / f"c.pt.{os.getpid()}.abc.tmp"
    live.write_text("")
    checkpoints.save_checkpoint(tmp_path / "c.pt", step=1)
    assert live.exists()


def test_two_writers_of_one_output_fail_fast_naming_the_other(tmp_path, hanging_writer):
    started = time.monotonic()
    with pytest.raises(checkpoints.ConcurrentWriteError, match=rf"another process is writing .*c\.pt \(pid "
                                                               rf"{hanging_writer.pid}\)"):
        checkpoints.save_checkpoint(tmp_path / "c.pt", step=2)
    assert time.monotonic() - started < 5
    checkpoints.save_checkpoint(tmp_path / "d.pt", step=2)  # another output is not locked
    hanging_writer.kill()
    hanging_writer.wait()
    checkpoints.save_checkpoint(tmp_path / "c.pt", step=3)  # the lock dies with its holder
    assert checkpoints.load_checkpoint(tmp_path / "c.pt") == {"step": 3} and _temporaries(tmp_path) == []


def test_load_plain_on_another_kind_of_file_says_what_it_expects(tmp_path):
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"weights\.npz.*save_plain"):
        folding.load_plain(tmp_path / "weights.npz")
    folding.save_plain(nn.Sequential(nn.Linear(2, 2)), tmp_path / "plain.pt")
    assert isinstance(folding.load_plain(tmp_path / "plain.pt"), nn.Sequential)
