"""The ablation study: recipes with equal epoch budgets, resumable runs, paired summaries, the combination rule."""
import json

import pytest

from pruning_utils.config import seed_everything
from pruning_utils.engine import data, models
from pruning_utils.studies import ablations


def test_every_arm_trains_the_same_epochs():
    for arm in ablations.ARMS:
        recipe = ablations.recipe_of(arm)
        recipe.check(8)
        main = sum(stage.epochs for stage in recipe.schedule_for(8))
        assert main + recipe.restarts * recipe.restart_epochs == 8, arm
    assert [s.start for s in ablations.recipe_of("seeds_stages").schedule_for(8)] == [0.75, 0.5, 0.25, 0.0]
    assert ablations.recipe_of("kd").loss == "kd"


def test_recipes_that_cannot_run_are_refused_before_training():
    with pytest.raises(ValueError, match="do not split evenly"):
        ablations.recipe_of("seeds_stages").check(6)
    with pytest.raises(ValueError, match="ramp_epochs"):
        ablations.recipe_of("ramp_4").check(4)
    with pytest.raises(ValueError, match="init"):
        ablations.Recipe(init="zeros").check(8)
    with pytest.raises(ValueError, match="unknown arm"):
        ablations.recipe_of("dropout")
    with pytest.raises(ValueError, match="unknown arm"):
        ablations.recipe_of("combined")  # a combination exists only once combine() has named it


def _row(arm, seed, val, bn=None):
    return {"arm": arm, "factor": ablations.ARMS.get(arm, ("rival",))[0], "seed": seed, "val_acc": val,
            "test_acc": val - 1, "train_seconds": 10.0, "params": 100, "val_acc_bn": bn if bn is not None else val,
            "test_acc_bn": val}


def test_summary_pairs_seeds_and_combination_takes_the_best_change_per_field():
    rows = [_row("reference", 0, 70.0, bn=70.5), _row("reference", 1, 72.0, bn=72.5),
            _row("kd", 0, 71.0), _row("kd", 1, 74.0),            # gain +1.5
            _row("ce_kd", 0, 70.5), _row("ce_kd", 1, 72.5),      # +0.5, same field as kd: skipped
            _row("ramp_4", 0, 70.4), _row("ramp_4", 1, 72.3),    # +0.35
            _row("he_init", 0, 60.0), _row("he_init", 1, 61.0),  # harmful
            _row("deep_first", 0, 70.1), _row("deep_first", 1, 72.1)]  # +0.1, below min_gain
    summary = {s["arm"]: s for s in ablations.summarize_arms(rows)}
    assert summary["reference"]["gain"] is None and summary["reference"]["spread"] == pytest.approx(2.0)
    assert summary["kd"]["gain"] == pytest.approx(1.5) and summary["kd"]["mean"] == pytest.approx(72.5)
    assert summary["reference"]["bn_mean"] == pytest.approx(71.5)
    combined = ablations.combine(list(summary.values()), 8, min_gain=0.2, bn_batches=30)
    assert combined == {"loss": "kd", "ramp_epochs": 4, "bn_recalibration_batches": 30}
    assert ablations.combine(list(summary.values()), 8, min_gain=5.0) == {}
    # round two: deep_first helped a little and sets another field; ce_kd sets the loss again; he_init hurt
    assert ablations.stacked(list(summary.values()), combined, 8) == {
        "combined+deep_first": {**combined, "alpha_order": "deep_first"}}
    assert ablations.stacked(list(summary.values()), {}, 8) == {}


def test_a_study_runs_resumes_and_refuses_unknown_arms(tmp_path):
    images = data.load_classification("embedded")
    seed_everything(0)
    baseline = models.vgg16(images.num_classes, width=0.0625)
    config = ablations.StudyConfig(fraction=0.35, epochs=3, bn_batches=2)

    def make_loaders(seed):
        return images.loaders(64, seed=seed, train_size=128)

    study = dict(baseline=baseline, make_loaders=make_loaders, input_shape=(3, 32, 32), config=config,
                 results_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown arms"):
        ablations.run_study(["reference", "mixup"], [0], **study)
    with pytest.raises(ValueError, match="ramp_epochs"):
        ablations.run_study(["ramp_4"], [0], **study)  # refused before anything trains
    assert not list(tmp_path.glob("*.json"))
    rows = ablations.run_study(["reference", ablations.RIVAL], [0, 1], **study)
    assert rows[2]["factor"] == "structured rival" and "same_as" not in rows[2]  # never a copy of the reference
    assert [(r["arm"], r["seed"]) for r in rows] == [("reference", 0), ("reference", 1), (ablations.RIVAL, 0),
                                                   (ablations.RIVAL, 1)]
    reference = rows[0]
    assert reference["epochs"] == 3 and len(reference["curve"]) == 3 and "val_acc_bn" in reference
    assert abs(reference["params"] - rows[2]["params"]) <= 0.02 * reference["params"]  # the same budget
    marked = json.loads((tmp_path / "reference_s0.json").read_text())
    marked["val_acc"] = -1.0  # a finished arm is read, not rerun
    (tmp_path / "reference_s0.json").write_text(json.dumps(marked))
    assert ablations.run_study(["reference"], [0], **study)[0]["val_acc"] == -1.0
    combined = ablations.run_study(["combined"], [0], extra={"combined": {"loss": "ce+kd"}}, **study)
    assert combined[0]["changes"] == {"loss": "ce+kd"} and combined[0]["factor"] == "combined"
    assert "same_as" not in combined[0]
    twin = ablations.run_study(["combined"], [0], extra={"combined": {}}, **study)[0]  # the reference's recipe
    assert twin["same_as"] == "reference" and twin["val_acc"] == -1.0 and twin["arm"] == "combined"


def test_goal_compares_the_best_recipe_with_the_baseline_and_the_rival():
    rows = [_row("reference", 0, 70.0), _row("kd", 0, 72.0), _row(ablations.RIVAL, 0, 71.0)]
    goal = ablations.goal(ablations.summarize_arms(rows), baseline_val=73.0)
    assert goal["best_arm"] == "kd" and goal["best_changes"] == {"loss": "kd"}
    assert goal["below_baseline_val"] == pytest.approx(1.0) and goal["over_rival_val"] == pytest.approx(1.0)
    assert ablations.goal(ablations.summarize_arms([_row(ablations.RIVAL, 0, 71.0)]), 73.0) == {}
