"""Every numbered notebook runs headless under papermill with tiny parameters; assert on its metrics JSON.

The executed copies stay in ``runs/tiny/`` for nbval (``make test`` runs it over them after this suite)."""
import json
import math

import nbformat
import pytest

from pruning_utils.config import RUNS_DIR
from pruning_utils.harness import notebooks

TINY_RUNS = RUNS_DIR / "tiny"  # executed copies, figures and metrics of the tiny runs

TINY = {
    "01_baseline_training.ipynb": {"VGG_WIDTH": 0.0625, "VGG_EPOCHS": 1, "AE_WIDTH": 0.125, "AE_EPOCHS": 1,
                                   "CROPS_PER_PHOTO": 2},
    "02_vgg16_pruning.ipynb": {"VGG_WIDTH": 0.0625, "BASELINE_EPOCHS": 1, "PRUNE_EPOCHS": 2,
                               "RECIPE": {"ramp_epochs": 1}, "RESUME": False},
    "03_encoder_pruning.ipynb": {"AE_WIDTH": 0.0625, "AE_EPOCHS": 1, "CROPS_PER_PHOTO": 2, "PRUNE_EPOCHS": 2,
                                 "RECIPE": {"ramp_epochs": 1}, "RESUME": False, "INTERACTIVE": False},
    "04_decoder_pruning.ipynb": {"AE_WIDTH": 0.0625, "AE_EPOCHS": 1, "CROPS_PER_PHOTO": 2, "PRUNE_EPOCHS": 4,
                                 "RECIPE": {"ramp_epochs": 1}, "RESUME": False},
    "06_benchmarking.ipynb": {"WIDTH": 0.0625, "BATCH_SIZES": [1, 2], "MIN_RUN_TIME": 0.01, "THREADS": 1,
                              "MEASURE_RAM": False},  # peak RAM: tests/test_bench.py
    "05_weight_folding.ipynb": {"SIZE_VGG_WIDTH": 0.25, "SIZE_AE_WIDTH": 0.25, "VGG_WIDTH": 0.0625, "AE_WIDTH": 0.0625,
                                "PRUNE_EPOCHS": 1},
    "07_comparison.ipynb": {"VGG_WIDTH": 0.0625, "BASELINE_EPOCHS": 1, "EPOCHS": 2,
                            "BRANCH_RECIPE": {"ramp_epochs": 1}, "FRACTIONS": [0.35], "SPEED_BATCH_SIZES": [1],
                            "METHODS": ["branches", "torch_pruning_l1", "autopruner", "autopruner_scratch", "scratch"],
                            "SEEDS": [0, 1], "SPEED_MIN_RUN_TIME": 0.01, "RESUME": False},
    "08_method_ablations.ipynb": {"VGG_WIDTH": 0.0625, "BASELINE_EPOCHS": 1, "EPOCHS": 3, "TRAIN_SIZE": 256,
                                  "ARMS": ["reference", "ce_kd", "deep_first", "torch_pruning_l1"], "SEEDS": [0, 1],
                                  "MIN_GAIN": -100.0, "RESUME": False},
    "10_skip_autoencoder.ipynb": {"AE_WIDTH": 0.0625, "AE_EPOCHS": 1, "CROPS_PER_PHOTO": 2, "PRUNE_EPOCHS": 2,
                                  "RECIPE": {"ramp_epochs": 1}, "SPEED_BATCH_SIZES": [1], "SPEED_MIN_RUN_TIME": 0.01,
                                  "SPEED_REPEATS": 1, "RESUME": False},
    "09_resnet_pruning.ipynb": {"BASELINE_EPOCHS": 1, "EPOCHS": 2, "BRANCH_RECIPE": {"ramp_epochs": 1},
                                "FRACTIONS": [0.35], "SPEED_BATCH_SIZES": [1], "SPEED_MIN_RUN_TIME": 0.01,
                                "SPEED_REPEATS": 1, "RESUME": False},
    "11_dcgan_pruning.ipynb": {"GAN_WIDTH": 0.0625, "GAN_EPOCHS": 1, "CLASSIFIER_WIDTH": 0.0625,
                               "CLASSIFIER_EPOCHS": 1, "PRUNE_EPOCHS": 2, "CODES_PER_EPOCH": 256,
                               "RECIPE": {"ramp_epochs": 1}, "SPEED_BATCH_SIZES": [1], "SPEED_MIN_RUN_TIME": 0.01,
                               "SPEED_REPEATS": 1, "RESUME": False},
}


def check_01(metrics, parameters):
    vgg, ae = metrics["vgg16"], metrics["autoencoder"]
    assert vgg["epochs"] == 1 and 0 <= vgg["val_acc"] <= 100 and 0 <= vgg["test_acc"] <= 100
    assert vgg["params"] > 0 and vgg["macs"] > vgg["params"]
    assert ae["epochs"] == 1 and ae["test_psnr"] == pytest.approx(10 * math.log10(1 / ae["test_mse"]))


def check_02(metrics, parameters):
    assert abs(metrics["param_fraction"] - parameters["PARAM_FRACTION"]) < 0.02
    assert set(metrics["runs"]) == {"he", "l1"}
    for run in metrics["runs"].values():
        assert run["fold_relative_max_difference"] <= 1e-5
        assert run["params"] == round(metrics["param_fraction"] * metrics["baseline"]["params"])
        assert run["epochs"] == 2 and 0 <= run["test_acc"] <= 100
    assert metrics["cost"]["mac_ratio"] > 1 and metrics["cost"]["step_time_ratio"] > 0


def check_03(metrics, parameters):
    assert metrics["bottleneck"] == [44, 16, 16]
    encoder = metrics["encoder"]
    assert encoder["fold_relative_max_difference"] <= 1e-5 and encoder["params"] < metrics["baseline"]["params"]
    assert encoder["test_psnr"] == pytest.approx(10 * math.log10(1 / encoder["test_loss"]))


def check_04(metrics, parameters):
    orders = metrics["orders"]
    assert set(orders) == {"decoder", "encoder_then_decoder", "both"}
    assert orders["encoder_then_decoder"]["params"] == orders["both"]["params"] < orders["decoder"]["params"]
    assert orders["encoder_then_decoder"]["epochs"] == orders["both"]["epochs"] == parameters["PRUNE_EPOCHS"]
    assert [p["epochs"] for p in orders["encoder_then_decoder"]["phases"].values()] == [2, 2]
    assert all(o["fold_relative_max_difference"] <= 1e-5 for o in orders.values())


def check_05(metrics, parameters):
    assert len(metrics["sizes"]) == 3 * len(parameters["KEEP_RATIOS"])
    assert all(row["max_relative_difference"] <= 1e-5 and row["params_folded"] < row["params"] for row in metrics["sizes"])
    assert metrics["autoencoder"]["bottleneck"] == [44, 16, 16]
    for model in ("vgg16", "autoencoder"):
        assert metrics[model]["max_relative_difference"] <= 1e-5
        assert metrics[model]["macs_folded"] < metrics[model]["macs"]


def check_06(metrics, parameters):
    assert len(metrics["rows"]) == 2 * len(parameters["BATCH_SIZES"]) * 3
    assert {g["model"] for g in metrics["speedups"]} == {"vgg16", "autoencoder"}
    assert all(g["mac_ratio"] > 1 and g["speedup"] > 0 for g in metrics["speedups"])


def check_07(metrics, parameters):
    rows, arms = metrics["rows"], {a["method"]: a for a in metrics["arms"]}
    assert sorted(r["method"] for r in rows) == sorted(parameters["METHODS"] * 2)
    assert list(arms) == parameters["METHODS"] and all(a["seeds"] == 2 and a["test_std"] >= 0 for a in arms.values())
    assert {(r["seed"], r["lr"]) for r in rows if r["method"] != "scratch"} == {(0, 0.01), (1, 0.01)}
    assert all(r["chosen"] for r in rows) and {r["lr"] for r in rows if r["method"] == "scratch"} == {0.05}
    paired = {p["other"]: p for p in metrics["paired"]}
    assert set(paired) == set(parameters["METHODS"]) - {"branches"} and all(p["seeds"] == 2 for p in paired.values())
    assert all(abs(r["param_fraction"] - 0.35) < 0.02 and r["epochs"] == 2 for r in rows if "scratch" not in r["method"])
    assert {r["epochs"] for r in rows if "scratch" in r["method"]} == {3}  # baseline epochs + EPOCHS
    assert {g["best_other"] for g in metrics["gaps"]["structured"]} <= {"torch_pruning_l1", "autopruner"}
    assert metrics["gaps"]["all"][0]["best_other"] != "branches"
    zeros = {r["variant"]: r for r in metrics["zeros_speed"]}
    assert zeros["magnitude (zeros)"]["macs"] > zeros["filter-pruned"]["macs"]


def check_08(metrics, parameters):
    arms = [s["arm"] for s in metrics["summary"]]
    assert arms == parameters["ARMS"] + ["combined"]  # MIN_GAIN -100: every change joins the combination
    assert metrics["combined"] == {"loss": "ce+kd", "alpha_order": "deep_first", "bn_recalibration_batches": 50}
    assert all(s["seeds"] == 2 and s["spread"] >= 0 for s in metrics["summary"])
    assert all(r["epochs"] == 3 for r in metrics["rows"]) and len(metrics["rows"]) == 2 * len(arms)
    best = max((s for s in metrics["summary"] if s["arm"] != "torch_pruning_l1"), key=lambda s: s["mean"])
    assert metrics["goal"]["best_arm"] == best["arm"]
    assert metrics["goal"]["over_rival_val"] == pytest.approx(best["mean"] - metrics["summary"][3]["mean"])


def check_09(metrics, parameters):
    rows = {r["method"]: r for r in metrics["rows"]}
    assert list(rows) == parameters["METHODS"]
    assert rows["branches"]["params"] == rows["torch_pruning_l1"]["params"] == rows["scratch"]["params"]
    assert rows["branches_internal"]["keep_ratio"] < rows["branches"]["keep_ratio"]
    assert all(rows[m]["fold_relative_max_difference"] <= 1e-5 for m in ("branches", "branches_internal"))
    kinds = {e["name"]: e["kind"] for e in metrics["plan"]}
    assert {n for n, k in kinds.items() if k == "left alone"} == {"fc"}
    assert kinds["stage1.0.conv1"] == "learned E" and kinds["stage2.0.shortcut.0"] == "shared selection"
    assert all(g["mac_ratio"] > 1 and g["speedup"] > 0 for g in metrics["speed"])


def check_10(metrics, parameters):
    arms = {(a["autoencoder"], a["part"]): a for a in metrics["arms"]}
    assert len(arms) == 2 * (len(parameters["PARTS"]) + parameters["ONE_SHOT"])
    assert arms[("skips", "both, one-shot")]["params"] == arms[("skips", "both")]["params"]
    assert arms[("skips", "both")]["params"] == arms[("no skips", "both")]["params"]  # additive skips add nothing
    assert arms[("skips", "decoder")]["params"] > arms[("no skips", "decoder")]["params"]  # coupled units stay whole
    assert all(a["fold_relative_max_difference"] <= 1e-5 and 0 < a["test_ssim"] <= 1 for a in arms.values())
    kinds = {e["name"]: e["kind"] for e in metrics["plans"]["both"]}
    assert {n for n, k in kinds.items() if k == "shared selection"} == {"encoder.6", "encoder.12", "decoder.0", "decoder.3"}
    assert len(metrics["speed"]) == 2 * len(parameters["PARTS"]) * len(parameters["SPEED_BATCH_SIZES"])


def check_11(metrics, parameters):
    arms = {a["arm"]: a for a in metrics["arms"]}
    assert len(arms) == 1 + parameters["ONE_SHOT"] + len(parameters["ADVERSARIAL_WEIGHTS"])
    generator = metrics["gan"]["generator"]
    assert len({a["params"] for a in arms.values()}) == 1 and arms["ramp"]["params"] < generator["params"]
    for arm in arms.values():
        assert arm["fold_relative_max_difference"] <= 1e-5 and arm["fd_real"] >= 0 and arm["fd_original"] >= 0
        assert arm["test_psnr"] == pytest.approx(10 * math.log10(1 / arm["test_loss"]))
    assert [e["kind"] for e in metrics["plan"]] == ["learned E"] * 3 + ["left alone"]
    assert metrics["references"]["real_train_fd_real"] >= 0 and len(metrics["gan"]["history"]) == 1
    assert len(metrics["speed"]) == len(parameters["SPEED_BATCH_SIZES"])
    assert metrics["gan"]["discriminator"]["params"] > 0


CHECKS = {"01_baseline_training.ipynb": check_01, "02_vgg16_pruning.ipynb": check_02,
          "03_encoder_pruning.ipynb": check_03, "04_decoder_pruning.ipynb": check_04,
          "05_weight_folding.ipynb": check_05, "06_benchmarking.ipynb": check_06, "07_comparison.ipynb": check_07,
          "08_method_ablations.ipynb": check_08, "09_resnet_pruning.ipynb": check_09,
          "10_skip_autoencoder.ipynb": check_10, "11_dcgan_pruning.ipynb": check_11}


@pytest.mark.parametrize("notebook", notebooks.numbered_notebooks(), ids=lambda p: p.name)
def test_notebook_runs_with_tiny_parameters(notebook):
    assert notebook.name in TINY, f"add tiny parameters and a check for {notebook.name} to this test"
    out = TINY_RUNS / notebook.stem
    parameters = {**TINY[notebook.name], "OUTPUT_DIR": str(out), "RUN_NAME": "tiny", "PROGRESS": False}
    (out / "tiny.json").unlink(missing_ok=True)
    notebooks.run_notebook(notebook, TINY_RUNS / notebook.name, parameters)
    record = json.loads((out / "tiny.json").read_text())
    assert record["parameters"]["PROFILE"] == "quick" and "papermill" in record["command"]
    CHECKS[notebook.name](record["metrics"], record["parameters"])
    assert list(out.glob("tiny*.png")), "the notebook wrote no figure"


@pytest.mark.parametrize("notebook", notebooks.numbered_notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_clean(notebook):
    nb = nbformat.read(notebook, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and ": " in tagged[0].source, "one typed, commented parameters cell"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook with its outputs"


def test_unknown_parameters_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="no parameters"):
        notebooks.run_notebook(notebooks.numbered_notebooks()[0], tmp_path / "x.ipynb", {"EPOCHZ": 1})
