"""Nothing silent in a run: the teacher stays frozen, resumes never mix runs, cached artefacts know what they were
made from, the CLI resumes after a kill and fails loudly."""
import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_pruning import SCHEDULE, _branched, _loaders

import pruning_utils as pu
from pruning_utils.engine import data, models
from pruning_utils.engine.train import ResumeMismatchError, fit
from pruning_utils.harness import cli, pretrained
from pruning_utils.method import pruning
from pruning_utils.studies import comparison


def test_an_explicit_teacher_is_never_changed():
    baseline = models.vgg16(width=0.125, classifier="mlp").train()  # as fit() leaves it
    before = copy.deepcopy(baseline.state_dict())
    model = pu.attach_branches(copy.deepcopy(baseline), 0.5)
    train, val = _loaders()
    pu.prune(model, train, val, SCHEDULE, pu.Recipe(loss="kd"), teacher=baseline, progress=False)
    assert baseline.training
    after = baseline.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the baseline's state changed while pruning"


def test_a_resume_with_other_settings_is_refused_naming_them(tmp_path):
    train, val = _loaders()
    pu.prune(_branched(), train, val, SCHEDULE, pu.Recipe(lr=0.01), checkpoint_dir=tmp_path, max_stages=1,
             progress=False)
    with pytest.raises(ResumeMismatchError, match=r"recipe.lr: checkpoint 0\.01, now 0\.02(.|\n)*delete"):
        pu.prune(_branched(), train, val, SCHEDULE, pu.Recipe(lr=0.02), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ResumeMismatchError, match="schedule"):
        pu.prune(_branched(), train, val, pu.make_schedule("step", 1, delta=0.25), checkpoint_dir=tmp_path,
                 progress=False)
    with pytest.raises(ResumeMismatchError, match="branches"):  # another keep ratio
        pu.prune(pu.attach_branches(models.vgg16(width=0.125, classifier="mlp"), 0.25), train, val, SCHEDULE,
                 pu.Recipe(lr=0.01), checkpoint_dir=tmp_path, progress=False)
    history = pu.prune(_branched(), train, val, SCHEDULE, pu.Recipe(lr=0.01), checkpoint_dir=tmp_path, progress=False)
    assert [h["stage"] for h in history] == [0, 1]  # the same settings resume


def test_fit_refuses_a_checkpoint_of_another_run(tmp_path):
    train, val = _loaders()
    model = models.vgg16(width=0.125, classifier="mlp")
    fit(model, train, val, task="classification", epochs=1, lr=0.01, checkpoint=tmp_path / "b.pt", progress=False)
    with pytest.raises(ResumeMismatchError, match="lr: checkpoint 0.01, now 1000000.0"):
        fit(model, train, val, task="classification", epochs=1, lr=1e6, checkpoint=tmp_path / "b.pt", progress=False)


def test_baselines_are_keyed_by_the_data_content_and_every_setting():
    digits = data.load_classification("embedded")
    other = copy.deepcopy(digits)
    other.x_train[0, 0, 0, 0] ^= 1
    path = pretrained.baseline_checkpoint_path
    assert path("vgg16", digits, 0.125, 1, 0, lr=0.05) != path("vgg16", other, 0.125, 1, 0, lr=0.05)
    assert path("vgg16", digits, 0.125, 1, 0, lr=0.05) != path("vgg16", digits, 0.125, 1, 0, lr=1e6)
    assert path("vgg16", digits, 0.125, 1, 0, lr=0.05) == path("vgg16", copy.deepcopy(digits), 0.125, 1, 0, lr=0.05)


def test_a_comparison_refuses_arms_made_from_another_baseline(tmp_path):
    digits = data.load_classification("embedded")
    loaders, shape = digits.loaders(64), (3, 32, 32)
    protocol = comparison.ComparisonConfig(epochs=2, scratch_epochs=1, autopruner_epochs=1)
    baseline = models.vgg16(width=0.0625)
    comparison.compare(baseline, loaders, shape, [0.35], ["torch_pruning_l1"], protocol, results_dir=tmp_path,
                       progress=False)
    with pytest.raises(ResumeMismatchError, match="baseline"):
        comparison.compare(models.vgg16(width=0.0625), loaders, shape, [0.35], ["torch_pruning_l1"], protocol,
                           results_dir=tmp_path, progress=False)


CLI_TINY = ["--width", "0.0625", "--baseline-epochs", "1", "--batch-size", "64", "--param-fraction", "0.35"]


def test_a_cli_run_that_never_trains_at_alpha_zero_fails_with_a_record(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    out = tmp_path / "failed.json"
    with pytest.warns(UserWarning, match="rolled back"):
        code = cli.main([*CLI_TINY, "--ramp-epochs", "1", "--final-epochs", "1", "--lr", "1e12", "--out", str(out)])
    record = json.loads(out.read_text())
    assert code == 1 and record["metrics"]["status"] == "failed" and "learning rate" in record["metrics"]["error"]
    assert not out.with_suffix(".plain.pt").exists()


def test_the_cli_resumes_its_pruning_after_a_kill(tmp_path):
    env = {**os.environ, "PRUNING_UTILS_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pruning_utils.cli", *CLI_TINY, "--ramp-epochs", "1", "--final-epochs", "6",
               "--out", "run.json"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("data/checkpoints/cli/*/stage_00.pt")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "run.json").exists()
    stage_0 = next(tmp_path.glob("data/checkpoints/cli/*/stage_00.pt"))
    written = stage_0.stat().st_mtime_ns
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "run.json").read_text())["metrics"]
    assert record["status"] == "completed" and record["epochs"] == 7
    assert stage_0.stat().st_mtime_ns == written  # stage 0 was resumed, not trained again
    assert sorted(pruning.stage_checkpoints(stage_0.parent)) == [0, 1]
