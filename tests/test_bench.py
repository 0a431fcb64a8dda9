import csv
import json
import subprocess
import sys

import pytest
import torch

from pruning_utils.engine import checkpoints
from pruning_utils.method import folding
from pruning_utils.studies import bench

TINY = {"width": 0.0625, "keep_ratio": 0.5, "batch_sizes": [1, 2], "threads": 1, "min_run_time": 0.01, "ram": False}


def test_variants_shrink_after_folding():
    variants = bench.build_variants("vgg16", width=0.125, keep_ratio=0.5)
    assert tuple(variants) == bench.VARIANTS
    macs = {name: bench.count_macs(m, bench.MODELS["vgg16"]) for name, m in variants.items()}
    assert macs["folded"] < macs["mixed_alpha0"] < macs["original"]
    params = {name: bench.count_parameters(m) for name, m in variants.items()}
    assert params["folded"] < params["original"] < params["mixed_alpha0"]


def test_channel_multiple_rounds_the_kept_widths():
    def encoder_widths(multiple):
        folded = bench.build_variants("autoencoder", 0.25, 0.59, include=["encoder"], channel_multiple=multiple)
        return [m.out_channels for m in folded["folded"].encoder if hasattr(m, "out_channels")]

    assert any(w % 8 for w in encoder_widths(1))
    assert all(w % 8 == 0 for w in encoder_widths(8))


def test_rows_and_speedups():
    rows = bench.run(["vgg16"], device="cpu", **TINY)
    assert [(r["variant"], r["batch_size"]) for r in rows] == [(v, b) for v in bench.VARIANTS for b in (1, 2)]
    assert all(r["cpu_s_per_image"] > 0 and r["threads"] == 1 and r["checkpoint_bytes"] > 0 for r in rows)
    assert not any("peak_ram_mib" in r for r in rows)
    gains = bench.speedups(rows)
    assert [(g["variant"], g["batch_size"]) for g in gains] == [("mixed_alpha0", 1), ("mixed_alpha0", 2),
                                                                ("folded", 1), ("folded", 2)]
    assert all(g["mac_ratio"] > 1 for g in gains)
    assert gains[-1]["efficiency"] == pytest.approx(gains[-1]["speedup"] / gains[-1]["mac_ratio"])
    assert "efficiency" in bench.format_report(rows)


def test_time_by_operator_groups_the_profile():
    assert [bench.operator_group(n) for n in ("aten::mkldnn_convolution", "aten::native_batch_norm",
                                               "aten::max_pool2d_with_indices", "aten::addmm", "aten::clamp_min_",
                                               "aten::relu_")] == ["conv", "batch_norm", "max_pool", "linear",
                                                                   "other", "relu"]
    rows = bench.run(["vgg16"], device="cpu", by_operator=True, **TINY)
    times = [r["cpu_ms_by_operator"] for r in rows]
    assert all(t["conv"] > 0 and t["batch_norm"] > 0 and min(t.values()) >= 0 for t in times)
    assert set().union(*times) <= {"conv", "batch_norm", "relu", "max_pool", "linear", "other"}


def test_subnormal_weights_by_dtype():
    norm = torch.nn.BatchNorm1d(2)  # a float weight and an integer counter
    with torch.no_grad():
        norm.weight[0] = 1e-40
    assert bench.subnormal_weights(norm) == 1
    assert bench.subnormal_weights(norm.double()) == 0  # 1e-40 is a normal float64


def test_peak_ram_in_a_fresh_process():
    model = bench.original_model("vgg16", 0.0625)
    ram = bench.peak_ram_subprocess(model, bench.MODELS["vgg16"], batch_size=2)
    assert ram["peak_ram_mib"] > ram["ram_increase_mib"] > 0


def test_checkpoint_and_folded_file(tmp_path):
    folded = bench.build_variants("vgg16", 0.0625, 0.5)["folded"]
    path = folding.save_plain(folded, tmp_path / "folded.pt")
    variants = bench.build_variants("vgg16", 0.0625, folded_file=path)
    assert list(variants) == ["original", "folded"]
    assert bench.count_parameters(variants["folded"]) == bench.count_parameters(folded)
    original = bench.original_model("vgg16", 0.0625)
    meta = {"model": "vgg16", "width": 0.0625}
    checkpoints.save_checkpoint(tmp_path / "baseline.pt", model=original.state_dict(), settings=meta)
    loaded = bench.build_variants("vgg16", 0.0625, 0.5, seed=1, checkpoint=tmp_path / "baseline.pt")["original"]
    assert torch.equal(loaded.features[0].weight, original.features[0].weight)
    checkpoints.save_checkpoint(tmp_path / "ae.pt", model={}, settings={"model": "autoencoder", "width": 0.25})
    with pytest.raises(ValueError, match="not a vgg16 of width 0.0625"):
        bench.original_model("vgg16", 0.0625, tmp_path / "ae.pt")


def test_command_line_writes_csv_and_json(tmp_path, capsys):
    argv = ["--models", "autoencoder", "--width", "0.0625", "--batch-sizes", "1", "--min-run-time", "0.01",
            "--threads", "1", "--device", "cpu", "--no-ram", "--out", str(tmp_path), "--name", "tiny"]
    assert bench.main(argv) == 0
    assert "efficiency" in capsys.readouterr().out
    record = json.loads((tmp_path / "tiny.json").read_text())
    assert set(record) == {"command", "settings", "machine", "rows", "speedups"}
    assert record["command"] == "python -m pruning_utils.bench " + " ".join(argv)
    assert record["settings"]["threads"] == 1 and record["machine"]["cpu_count"] >= 1
    assert [r["variant"] for r in record["rows"]] == list(bench.VARIANTS)
    with open(tmp_path / "tiny.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 and {"model", "variant", "batch_size", "params", "macs", "cpu_s_per_image"} <= set(table[0])


def test_help_from_a_shell():
    done = subprocess.run([sys.executable, "-m", "pruning_utils.bench", "--help"], capture_output=True, text=True,
                          check=True)
    assert "--keep-ratio" in done.stdout and "peak_ram_mib" in done.stdout


@pytest.mark.parametrize("argv, message", [
    (["--models", "resnet"], "invalid choice"),
    (["--keep-ratio", "0"], "keep ratio must be in"),
    (["--keep-ratio", "1.5"], "keep ratio must be in"),
    (["--batch-sizes", "0"], "batch sizes must be positive"),
    (["--models", "vgg16", "autoencoder", "--checkpoint", "x.pt"], "single model"),
])
def test_bad_command_lines(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        bench.run(["resnet"])
    with pytest.raises(ValueError, match="keep ratio"):
        bench.build_variants("vgg16", keep_ratio=1.5)
    with pytest.raises(ValueError, match="ae_part"):
        bench.run(["autoencoder"], ae_part="middle")


@pytest.mark.parametrize("kind", ["resnet20", "resnet18"])
def test_resnets_fold_their_residual_channels_too(kind):
    width = 0.25 if kind == "resnet20" else 1.0
    variants = bench.build_variants(kind, width=width, keep_ratio=0.5, fuse_bn=True)
    macs = {name: bench.count_macs(m, bench.MODELS[kind]) for name, m in variants.items()}
    assert macs["folded"] < 0.4 * macs["original"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in variants["folded"].modules())
    rows = bench.measure(kind, variants, [1], threads=1, min_run_time=0.01, ram=False, input_shape=(3, 32, 32))
    assert {r["variant"] for r in rows} == set(bench.VARIANTS) and all(r["cpu_s_per_image"] > 0 for r in rows)
    with pytest.raises(ValueError, match="one width"):
        bench.original_model("resnet18", width=0.5)


def test_the_autoencoder_runs_at_its_own_keep_ratio():
    rows = bench.run(["vgg16", "autoencoder"], device="cpu", ae_keep_ratio=0.35, **{**TINY, "batch_sizes": [1]})
    ratios = {r["model"]: r["keep_ratio"] for r in rows}
    assert ratios == {"vgg16": 0.5, "autoencoder": 0.35}
    folded = next(r for r in rows if (r["model"], r["variant"]) == ("autoencoder", "folded"))
    expected = bench.build_variants("autoencoder", 0.0625, 0.35, include=bench.AE_PARTS["encoder"])["folded"]
    assert folded["params"] == bench.count_parameters(expected)
    with pytest.raises(ValueError, match="keep"):
        bench.run(["autoencoder"], ae_keep_ratio=1.5)
