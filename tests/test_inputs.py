"""Nothing silent: damaged checkpoints, interrupted and concurrent writes, bad notebook parameters."""
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Optional

import nbformat
import numpy as np
import papermill
import pytest
import torch
from papermill.translators import translate_parameters
from test_notebooks import TINY
from torch import nn

from pruning_utils.engine import checkpoints
from pruning_utils.harness import notebooks
from pruning_utils.harness.parameters import ParameterError, check_parameters, fits
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


# --------------------------------------------------------------------------------------------
# Notebook parameters
# --------------------------------------------------------------------------------------------
def _namespace(**values):
    """A notebook's globals: the typed parameters cell, then papermill's (unannotated) assignments."""
    namespace = {}
    exec("from typing import Optional\nVGG_WIDTH: Optional[float] = None\nEPOCHS: int = 2\nPROFILE: str = 'quick'\n"
         "ARMS: list[str] = ['a']\nRECIPE: dict = {}\n_hidden = 1\nlower = 2\n", namespace)
    namespace.update(values)
    return namespace


def test_parameters_with_defaults_none_and_int_for_float_pass():
    check_parameters(_namespace())
    check_parameters(_namespace(VGG_WIDTH=1, EPOCHS=3, ARMS=["b", "c"], RECIPE={"x": 1}, _PRIVATE=1))


def test_unknown_parameter_is_named_with_the_notebooks_parameters():
    with pytest.raises(ValueError, match=r"NOT_A_PARAM = 3 is not a parameter(.|\n)*parameters of this notebook are: "
                                         r"VGG_WIDTH: Optional\[float\], EPOCHS: int, PROFILE: str"):
        check_parameters(_namespace(NOT_A_PARAM=3))


@pytest.mark.parametrize("name, value", [("VGG_WIDTH", "abc"), ("EPOCHS", 2.5), ("EPOCHS", True), ("EPOCHS", None),
                                         ("PROFILE", 1), ("ARMS", ["a", 1]), ("ARMS", "a"), ("RECIPE", [])])
def test_wrong_type_names_parameter_value_and_type(name, value):
    with pytest.raises(TypeError, match=rf"{name} = {re.escape(repr(value))} is not of the expected type"):
        check_parameters(_namespace(**{name: value}))


def test_both_problems_are_listed_at_once():
    with pytest.raises(ParameterError) as err:
        check_parameters(_namespace(EPOCHZ=1, VGG_WIDTH="abc"))
    assert "EPOCHZ" in str(err.value) and "VGG_WIDTH = 'abc'" in str(err.value)


@pytest.mark.parametrize("value, annotation, expected", [
    (1, float, True), (True, float, False), (1.5, int, False), (None, float | None, True), (2, int | None, True),
    ("x", Optional[int], False), ((1, 2), tuple, True), ((1, "a"), tuple[int, str], True),
    ((1, "a"), tuple[int, ...], False), ({"a": 1}, dict[str, int], True), ({"a": "b"}, dict[str, int], False),
    ([1, 2.0], list[float], True), (object(), Any, True), ("x", "not a type", True), ([1], list, True),
])
def test_fits(value, annotation, expected):
    assert fits(value, annotation) is expected


def _parameters_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    check = next(c for c in nb.cells[index + 1:] if c.cell_type == "code")
    assert "check_parameters(globals())" in check.source.splitlines()[1]
    return "\n".join(c.source for c in nb.cells[:index + 1] if c.cell_type == "code")


@pytest.mark.parametrize("notebook", notebooks.numbered_notebooks(), ids=lambda p: p.name)
def test_every_notebook_passes_its_own_check_with_defaults_and_tiny_parameters(notebook):
    source = _parameters_cell(notebook)
    injected = {**TINY[notebook.name], "OUTPUT_DIR": "/tmp/x", "RUN_NAME": "tiny", "PROGRESS": False,
                "PROFILE": "quick"}
    for parameters in ({}, injected):
        namespace = {}
        exec(source + "\n" + translate_parameters("python3", "python", parameters), namespace)
        check_parameters(namespace)
    namespace = {}
    exec(source + "\n" + translate_parameters("python3", "python", {"NOT_A_PARAM": 3}), namespace)
    with pytest.raises(ParameterError, match="NOT_A_PARAM"):
        check_parameters(namespace)


def test_runner_refuses_prefixes_that_match_no_notebook(capsys):
    with pytest.raises(SystemExit) as exit_info:
        notebooks.main(["--only", "01", "99"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "['99']" in err and "01_baseline_training.ipynb" in err


def test_papermill_run_with_an_unknown_parameter_fails_at_once(tmp_path):
    notebook = next(p for p in notebooks.numbered_notebooks() if p.name.startswith("06"))
    parameters = {**TINY[notebook.name], "OUTPUT_DIR": str(tmp_path), "NOT_A_PARAM": 3, "WIDTH": "abc"}
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(notebook.parent), progress_bar=False)
    assert "NOT_A_PARAM = 3" in str(err.value) and "WIDTH = 'abc'" in str(err.value)
    assert not list(tmp_path.glob("*.json"))  # no work done


def test_autoencoder_orders_and_their_epochs_are_checked_before_any_work():
    from pruning_utils.studies import autoencoders

    autoencoders.check_orders(["decoder", "encoder_then_decoder", "both"], 4)
    with pytest.raises(ValueError, match="unknown orders"):
        autoencoders.check_orders(["decoder_first"], 4)
    with pytest.raises(ValueError, match="split evenly"):
        autoencoders.check_orders(["encoder_then_decoder"], 3)
