import pytest
import torch
from torch import nn

import pruning_utils as pu
from pruning_utils import config
from pruning_utils.engine import models, sizes
from pruning_utils.harness import records
from pruning_utils.method import budget


def test_macs_count_only_the_path_that_runs():
    model = models.vgg16(width=0.25)
    full = sizes.count_macs(model, (3, 32, 32))
    conv = nn.Conv2d(3, 16, 3, padding=1)
    assert sizes.count_macs(conv, (3, 32, 32)) == 16 * 3 * 9 * 32 * 32
    pu.attach_branches(model, 0.5)
    assert sizes.count_macs(model, (3, 32, 32)) == full  # alpha 1: the original alone
    pu.set_alpha(model, 0.5)
    mixed = sizes.count_macs(model, (3, 32, 32))
    pu.set_alpha(model, 0.0)
    pruned = sizes.count_macs(model, (3, 32, 32))
    assert pruned < full < mixed and mixed == pytest.approx(full + pruned, rel=0.01)


def test_keep_ratio_for_a_parameter_fraction():
    model = models.vgg16(width=0.25)
    ratio = budget.keep_ratio_for_fraction(model, 0.35)
    size = budget.folded_size(model, ratio, (3, 32, 32))
    assert abs(size["param_fraction"] - 0.35) <= 0.005 and 0.55 < ratio < 0.65
    with pytest.raises(ValueError, match="fraction"):
        budget.keep_ratio_for_fraction(model, 1.5)


def test_layer_widths_after_folding():
    model = pu.attach_branches(models.vgg16(width=0.25), 0.5)
    pu.set_alpha(model, 0.0)
    widths = [w for _, w in budget.layer_widths(pu.fold(model))]
    assert widths[:2] == [8, 8] and widths[-1] == 10


def test_settings_key_ignores_run_only_parameters_but_not_the_profile():
    profile = config.get_profile("quick")
    key = records.settings_key({"LR": 0.1, "PROGRESS": True}, profile)
    assert key == records.settings_key({"LR": 0.1, "PROGRESS": False, "OUTPUT_DIR": "x"}, profile)
    assert key != records.settings_key({"LR": 0.2}, profile)
    assert key != records.settings_key({"LR": 0.1}, config.get_profile("full"))
    assert key == records.settings_key({"LR": 0.1, "RUN_NAME": "b", "INITS": ["he"]}, profile, ignore=("INITS",))
    assert key != records.settings_key({"LR": 0.1, "INITS": ["he"]}, profile)


def test_slug_makes_file_name_parts():
    assert records.slug([0, "a b"]) == "-0---a-b--" and records.slug("x_1.5+e") == "x-1.5+e"
    assert records.slug("y" * 50) == "y" * 40 and records.slug("über") == "-ber"


def test_format_table_and_write_record(tmp_path):
    table = records.format_table([{"a": 1.23456, "b": "x"}], ["a", "b"], {"a": ".2f"})
    assert table.splitlines()[-1].split() == ["1.23", "x"]
    path = records.write_record(tmp_path / "r.json", "01_x.ipynb", {"EPOCHS": 2, "INITS": ["he"]}, {"acc": 1.0})
    record = records.read_record(path)
    assert "-p EPOCHS 2" in record["command"] and "INITS" in record["command"]
    assert record["machine"]["cpu_count"] >= 1 and record["metrics"] == {"acc": 1.0}


def test_paths_resolve_from_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert config.resolve_path("data") == config.REPO_ROOT / "data"
    assert config.resolve_path(tmp_path) == tmp_path
    with pytest.raises(ValueError, match="profile"):
        config.get_profile("huge")
    assert config.get_device("cpu") == torch.device("cpu")


def test_tqdm_disable_switches_every_progress_bar_off(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert config.show_progress(True) and not config.show_progress(False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not config.show_progress(True)
