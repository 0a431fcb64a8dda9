import pytest
import torch

import pruning_utils as pu
from pruning_utils.config import seed_everything
from pruning_utils.engine import data, models
from pruning_utils.engine.train import evaluate
from pruning_utils.harness import plots
from pruning_utils.method import branches, pipeline, pruning, schedules


def _loaders(n=48, batch=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return (data.BatchLoader(x, y, batch, shuffle=True, augment=True, seed=1, mean=(0.5,) * 3, std=(0.25,) * 3),
            data.BatchLoader(x[:32], y[:32], batch, mean=(0.5,) * 3, std=(0.25,) * 3))


def _branched(init="l1"):
    seed_everything(0)
    return pu.attach_branches(models.vgg16(width=0.125, classifier="mlp"), 0.5, init=init)


SCHEDULE = schedules.make_schedule("step", 1, delta=0.5)


@pytest.mark.parametrize("lr_schedule,loss", [("plateau", "ce"), ("onecycle", "ce+kd")])
def test_interrupted_and_resumed_run_gives_the_same_weights(tmp_path, lr_schedule, loss):
    config = pu.PruneConfig(lr=0.01, lr_schedule=lr_schedule, loss=loss)
    model = _branched()
    train, val = _loaders()
    full = pu.prune(model, train, val, SCHEDULE, config, progress=False)

    resumed = _branched()
    train, val = _loaders()
    first = pu.prune(resumed, train, val, SCHEDULE, config, checkpoint_dir=tmp_path, max_stages=1, progress=False)
    assert len(first) == 1 and pu.get_alpha(resumed) == 0.5
    again = _branched()  # a fresh process: new model at alpha 1, new loaders
    pu.set_alpha(again, 1.0)
    train, val = _loaders()
    history = pu.prune(again, train, val, SCHEDULE, config, checkpoint_dir=tmp_path, progress=False)
    assert [h["alpha"] for h in history] == [0.5, 0.0]
    assert [h["val_loss"] for h in history] == pytest.approx([h["val_loss"] for h in full], rel=1e-5)
    for a, b in zip(again.state_dict().values(), model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_resume_from_a_chosen_stage_restores_its_alpha(tmp_path):
    model = _branched()
    train, val = _loaders()
    pu.prune(model, train, val, schedules.make_schedule("explicit", 1, values=[0.6, 0.1]), checkpoint_dir=tmp_path,
             progress=False)
    assert sorted(pruning.stage_checkpoints(tmp_path)) == [0, 1, 2]
    fresh = _branched()
    state = torch.load(pruning.stage_checkpoints(tmp_path)[1], weights_only=True)
    assert state["alpha"] == pytest.approx(0.1)
    history = pu.prune(fresh, train, val, schedules.make_schedule("explicit", 1, values=[0.6, 0.1]),
                       checkpoint_dir=tmp_path, resume=1, max_stages=0, progress=False)
    assert pu.get_alpha(fresh) == pytest.approx(0.1) and [h["stage"] for h in history] == [0, 1]
    with pytest.raises(FileNotFoundError, match="stage 7"):
        pu.prune(fresh, train, val, SCHEDULE, checkpoint_dir=tmp_path, resume=7, progress=False)


def test_ramp_moves_alpha_within_the_stage_and_ends_at_zero():
    model = _branched()
    train, val = _loaders()
    seen = []
    original = branches.BranchedUnit.set_alpha

    def spy(unit, alpha):
        seen.append(alpha)
        original(unit, alpha)

    branches.BranchedUnit.set_alpha = spy
    try:
        history = pu.prune(model, train, val, schedules.ramp("cosine", 1, 1), progress=False)
    finally:
        branches.BranchedUnit.set_alpha = original
    assert history[0]["alpha"] == 0.0 and pu.get_alpha(model) == 0.0
    assert len({round(a, 6) for a in seen}) >= 4  # alpha took several values inside the ramp epoch


def test_non_finite_loss_rolls_back_and_a_run_with_no_alpha_zero_epoch_fails():
    model = _branched("he")
    train, val = _loaders()
    with pytest.warns(UserWarning, match="rolled back"), pytest.raises(pu.PruningFailedError, match="learning rate"):
        pu.prune(model, train, val, SCHEDULE, pu.Recipe(lr=1e12, lr_schedule="constant", momentum=0.0, loss="ce"),
                 progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_restarts_keep_the_best_alpha_zero_weights():
    model = _branched()
    train, val = _loaders()
    history = pu.prune(model, train, val, SCHEDULE, pu.PruneConfig(lr=0.01, lr_schedule="plateau", restarts=2),
                       progress=False)
    restarts = [h for h in history if h["phase"] == "restart"]
    assert len(restarts) == 2 and restarts[1]["lr"] == pytest.approx(1.0, rel=0.01)
    best = max(h["val_acc"] for h in history if h["alpha"] == 0.0)
    assert evaluate(model, val, "classification")["acc"] == pytest.approx(best)


def test_stuck_means_no_better_alpha_zero_metric_within_patience():
    history = [{"alpha": 0.5, "val_acc": 90.0}] + [{"alpha": 0.0, "val_acc": a} for a in (50.0, 60.0, 55.0, 58.0)]
    assert pruning.is_stuck(history, "val_acc", 2)
    assert not pruning.is_stuck(history, "val_acc", 3)
    assert pruning.is_stuck(history[:2], "val_acc", 1)  # too few alpha = 0 epochs to tell


def test_restarts_run_only_while_stuck():
    model = _branched()
    train, val = _loaders()
    config = pu.PruneConfig(lr=0.01, lr_schedule="plateau", restarts=2, restart_patience=1)
    history = pu.prune(model, train, val, SCHEDULE, config, progress=False)
    at_zero = [h["val_acc"] for h in history if h["alpha"] == 0.0]
    restarts = len([h for h in history if h["phase"] == "restart"])
    expected = 1  # the last stage has one epoch: too short to tell, so the first restart runs
    while expected < 2 and at_zero[expected] <= max(at_zero[:expected]):
        expected += 1
    assert restarts == expected
    with pytest.raises(ValueError, match="restart_patience"):
        pu.PruneConfig(restart_patience=0).validate("classification")


def test_batchnorm_recalibration_touches_only_the_layers_that_run():
    model = _branched()
    pu.set_alpha(model, 0.0)
    train, _ = _loaders()
    unit = branches.branched_units(model)["features.0"]
    original_mean = unit.original[1].running_mean.clone()
    branch_before = unit.branch[1].running_mean.clone()
    used = pu.recalibrate_batchnorm(model, train, batches=2)
    assert used == 2
    assert torch.equal(unit.original[1].running_mean, original_mean)
    assert not torch.equal(unit.branch[1].running_mean, branch_before)
    assert unit.branch[1].momentum == 0.1


def test_reconstruction_pruning_of_the_encoder():
    seed_everything(0)
    model = pu.attach_branches(models.RGBAutoencoder(width=0.125), 0.35, include=["encoder"])
    x = torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8)
    train = data.BatchLoader(x, None, 4, shuffle=True)
    history = pu.prune(model, train, data.BatchLoader(x, None, 4), SCHEDULE,
                       pu.PruneConfig(lr=1e-3, optimizer="adam", loss="reconstruction", weight_decay=0),
                       task="reconstruction", progress=False)
    assert "val_psnr" in history[-1] and history[-1]["alpha"] == 0.0


def test_bad_configurations():
    model = _branched()
    train, val = _loaders()
    with pytest.raises(ValueError, match="loss"):
        pu.prune(model, train, val, SCHEDULE, pu.PruneConfig(loss="hinge"), progress=False)
    with pytest.raises(ValueError, match="does not fit task"):
        pu.prune(model, train, val, SCHEDULE, pu.PruneConfig(loss="reconstruction"), progress=False)
    with pytest.raises(ValueError, match="end at alpha = 0"):
        pu.prune(model, train, val, [schedules.Stage(0.5, 0.5, 1)], progress=False)
    with pytest.raises(ValueError, match="no branches"):
        pu.prune(models.vgg16(width=0.125), train, val, SCHEDULE, progress=False)


def test_a_finished_run_is_loaded_and_folded_from_its_checkpoints(tmp_path):
    baseline = models.vgg16(width=0.125, classifier="mlp")
    train, val = _loaders()
    loaders = (train, val, val)
    done = pu.prune_and_fold(baseline, 0.5, loaders, schedule=SCHEDULE, task="classification", input_shape=(3, 32, 32),
                             checkpoint_dir=tmp_path, progress=False)
    loaded = pipeline.load_pruned(baseline, 0.5, tmp_path, loaders, task="classification", input_shape=(3, 32, 32))
    assert loaded.metrics == pytest.approx(done.metrics, rel=1e-6, abs=1e-6)
    x, _ = next(iter(val))
    with torch.inference_mode():
        assert torch.equal(loaded.folded(x), done.folded.eval()(x))
    with pytest.raises(ValueError, match="does not fit"):
        pipeline.load_pruned(baseline, 0.25, tmp_path, loaders, task="classification", input_shape=(3, 32, 32))
    with pytest.raises(FileNotFoundError, match="no stage checkpoints"):
        pipeline.load_pruned(baseline, 0.5, tmp_path / "none", loaders, task="classification", input_shape=(3, 32, 32))


def test_staggered_ramp_moves_the_deepest_unit_first_and_ends_all_at_zero():
    stage = schedules.Stage(1.0, 0.0, 1, "linear")
    units = ["first", "middle", "last"]
    deep = pu.PruneConfig(alpha_order="deep_first", alpha_stagger=0.5)
    early = pruning.unit_alphas(stage, 0.25, units, deep)
    assert early["last"] == pytest.approx(0.5) and early["middle"] == 1.0 and early["first"] == 1.0
    assert pruning.unit_alphas(stage, 0.75, units, deep) == pytest.approx({"last": 0.0, "middle": 0.0, "first": 0.5})
    assert set(pruning.unit_alphas(stage, 1.0, units, deep).values()) == {0.0}
    shallow = pruning.unit_alphas(stage, 0.25, units, pu.PruneConfig(alpha_order="shallow_first"))
    assert shallow["first"] == pytest.approx(0.5) and shallow["last"] == 1.0
    assert pruning.unit_alphas(stage, 0.25, units, pu.PruneConfig()) == pytest.approx(0.75)

    model = _branched()
    train, val = _loaders()
    history = pu.prune(model, train, val, schedules.ramp("linear", 1, 1), deep, progress=False)
    assert [h["alpha"] for h in history] == [0.0, 0.0] and pu.get_alpha(model) == 0.0
    with pytest.raises(ValueError, match="alpha_order"):
        pu.PruneConfig(alpha_order="random").validate("classification")
    with pytest.raises(ValueError, match="alpha_stagger"):
        pu.PruneConfig(alpha_stagger=1.0).validate("classification")


def test_validations_inside_the_ramp_follow_alpha_and_change_nothing():
    runs = {}
    for checks in (0, 3):
        model = _branched()
        train, val = _loaders(n=96)
        history = pu.prune(model, train, val, schedules.ramp("linear", 1, 1), progress=False, ramp_checks=checks)
        runs[checks] = (model, history)
    (plain, plain_history), (checked, history) = runs[0], runs[3]
    for a, b in zip(plain.state_dict().values(), checked.state_dict().values()):
        assert torch.equal(a, b)  # the validations took nothing from the training
    assert "checks" not in plain_history[0] and "checks" not in history[1]  # none at constant alpha
    points = history[0]["checks"]
    assert [p["epoch"] for p in points] == pytest.approx([0, 2 / 6, 4 / 6])  # 6 batches, one check every 2
    assert [p["alpha"] for p in points] == pytest.approx([1.0, 2 / 3, 1 / 3]) and 0 <= points[-1]["val_acc"] <= 100
    assert all(0 <= h["train_acc"] <= 100 for h in history)
    path = plots.alpha_path(history)  # the curves' alpha: step by step in the ramp, flat at alpha 0 after it
    expected = [(0, 1.0), (1 / 3, 2 / 3), (2 / 3, 1 / 3), (1, 0.0), (1, 0.0), (2, 0.0)]
    assert [x for point in path for x in point] == pytest.approx([x for point in expected for x in point])
