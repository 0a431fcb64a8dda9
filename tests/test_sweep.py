import csv
import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from pruning_utils.harness import sweep

PARAMETERS = '''
SIZE: int = 1             # a number
LABEL: str = "a"          # a text
OUTPUT_DIR: str = "."     # where the record goes
RUN_NAME: str = "toy"     # file stem of the record
PROGRESS: bool = True     # unused
'''
BODY = '''
import os
from pruning_utils.harness import records
records.write_record(records.output_dir("quick", OUTPUT_DIR) / f"{RUN_NAME}.json", "toy.ipynb",
                     {"SIZE": SIZE, "LABEL": LABEL}, {"run": {"val_acc": SIZE * 10.0}, "label_length": len(LABEL),
                                                     "threads": int(os.environ["OMP_NUM_THREADS"])})
'''


@pytest.fixture
def toy(tmp_path):
    notebook = tmp_path / "toy.ipynb"
    nb = new_notebook(cells=[new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}), new_code_cell(BODY)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, notebook)
    return notebook


def write_grid(path, text):
    path.write_text(text)
    return path


@pytest.mark.notebooks
def test_sweep_runs_the_grid_summarises_and_resumes(toy, tmp_path, capsys):
    grid = write_grid(tmp_path / "grid.yaml", "fixed: {LABEL: abc}\ngrid: {SIZE: [1, 2, 3]}\n")
    out = tmp_path / "sweep"
    here = os.getcwd()
    rows = sweep.run_sweep(toy, grid, out, jobs=2)
    assert os.getcwd() == here  # two runs at once leave the working directory as it was
    assert {r["threads"] for r in rows} == {max(1, os.cpu_count() // 2)}  # each kernel gets its share of the CPU
    assert [(r["SIZE"], r["run.val_acc"], r["label_length"]) for r in rows] == [(1, 10.0, 3), (2, 20.0, 3), (3, 30.0, 3)]
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["SIZE=1.ipynb", "SIZE=2.ipynb", "SIZE=3.ipynb"]
    with open(out / "summary.csv") as fh:
        assert [row["run.val_acc"] for row in csv.DictReader(fh)] == ["10.0", "20.0", "30.0"]
    assert (out / "summary.png").stat().st_size > 0
    (out / "SIZE=2.json").unlink()
    capsys.readouterr()
    sweep.run_sweep(toy, grid, out)
    assert "3 runs, 2 already done, 1 to run" in capsys.readouterr().out
    assert json.loads((out / "SIZE=2.json").read_text())["metrics"]["run"]["val_acc"] == 20.0


@pytest.mark.parametrize("text, message", [
    ("grid: {SIZES: [1, 2]}\n", "no parameters \\['SIZES'\\]"),
    ("grid: {RUN_NAME: [a, b]}\n", "sets \\['RUN_NAME'\\] itself"),
    ("fixed: {SIZE: 1}\ngrid: {SIZE: [1, 2]}\n", "both fixed and grid"),
    ("grid: {SIZE: 3}\n", "non-empty list"),
    ("runs: {SIZE: [1]}\n", "keys 'fixed' and 'grid'"),
])
def test_bad_grids_fail_before_anything_runs(toy, tmp_path, text, message):
    grid = write_grid(tmp_path / "grid.yaml", text)
    with pytest.raises(ValueError, match=message):
        sweep.run_sweep(toy, grid, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_command_line_reports_errors(toy, tmp_path, capsys):
    grid = write_grid(tmp_path / "grid.yaml", "grid: {SIZEZ: [1]}\n")
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([str(toy), str(grid), "--out", str(tmp_path / "sweep")])
    assert exit_info.value.code == 2 and "no parameters" in capsys.readouterr().err


def test_flatten_keeps_nested_scalars():
    assert sweep.flatten({"a": {"b": 1, "c": [1, 2], "d": {"e": 2.5}}, "f": "text", "g": True}) == {"a.b": 1, "a.d.e": 2.5}


def test_the_committed_ablation_grid_fits_notebook_08():
    from pruning_utils.config import REPO_ROOT
    from pruning_utils.studies import ablations

    fixed, grid = sweep.read_grid(REPO_ROOT / "sweeps" / "08_ablations_cifar10.yaml")
    sweep.check_names(REPO_ROOT / "notebooks" / "08_method_ablations.ipynb", fixed, grid)
    arms = [arm for (arm,) in grid["ARMS"]]
    assert set(arms) == set(ablations.ARMS) | {ablations.RIVAL} and fixed["COMBINE"] is False


@pytest.mark.notebooks
def test_a_failing_run_does_not_stop_the_others(toy, tmp_path):
    nb = nbformat.read(toy, as_version=4)
    nb.cells[1].source = "assert SIZE != 2, 'size two breaks'\n" + nb.cells[1].source
    nbformat.write(nb, toy)
    grid = write_grid(tmp_path / "grid.yaml", "grid: {SIZE: [1, 2, 3]}\n")
    out = tmp_path / "sweep"
    with pytest.raises(RuntimeError, match=r"1 of 3 runs failed: \['SIZE=2'\]"):
        sweep.run_sweep(toy, grid, out, jobs=1)
    assert sorted(p.name for p in out.glob("*.json")) == ["SIZE=1.json", "SIZE=3.json"]
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["SIZE=1.ipynb", "SIZE=2.failed.ipynb", "SIZE=3.ipynb"]


@pytest.mark.notebooks
def test_a_killed_sweep_resumes_losing_only_the_run_in_flight(toy, tmp_path, capsys):
    nb = nbformat.read(toy, as_version=4)
    nb.cells[1].source = "import time\ntime.sleep(0 if SIZE == 1 else 3)\n" + nb.cells[1].source
    nbformat.write(nb, toy)
    grid = write_grid(tmp_path / "grid.yaml", "grid: {SIZE: [1, 2]}\n")
    out, log = tmp_path / "sweep", tmp_path / "sweep.log"
    with open(log, "w") as fh:
        process = subprocess.Popen([sys.executable, "-m", "pruning_utils.harness.sweep", str(toy), str(grid),
                                    "--out", str(out)], stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not (out / "SIZE=1.ipynb").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert sweep.finished(out, "SIZE=1", {"SIZE": 1}) and not sweep.finished(out, "SIZE=2", {"SIZE": 2}), log.read_text()
    first = (out / "SIZE=1.json").stat().st_mtime_ns
    capsys.readouterr()
    rows = sweep.run_sweep(toy, grid, out)
    assert "2 runs, 1 already done, 1 to run" in capsys.readouterr().out
    assert (out / "SIZE=1.json").stat().st_mtime_ns == first and [r["run.val_acc"] for r in rows] == [10.0, 20.0]
    assert sweep.finished(out, "SIZE=2", {"SIZE": 2})
    assert not list(out.glob("*.running.ipynb"))
    with pytest.raises(ValueError, match="recorded with other parameters"):  # same run name, other fixed values
        sweep.run_sweep(toy, write_grid(tmp_path / "other.yaml", "fixed: {LABEL: b}\ngrid: {SIZE: [1, 2]}\n"), out)
