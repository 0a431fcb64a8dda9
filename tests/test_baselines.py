import copy
import json

import pytest
import torch
from conftest import tiny_batch
from torch import nn

from pruning_utils.engine import data, models, sizes
from pruning_utils.engine.train import evaluate
from pruning_utils.method import budget
from pruning_utils.method.recipe import Recipe
from pruning_utils.studies import baselines, comparison


@pytest.fixture(scope="module")
def digits():
    images = data.load_classification("embedded", seed=0)
    return images.loaders(64, seed=0), tuple(images.x_train.shape[1:])


def small_vgg(classifier="linear"):
    return models.vgg16(10, width=0.0625, classifier=classifier)


def target_for(model, keep_ratio):
    return sizes.count_parameters(budget.pruned_and_folded(model, keep_ratio))


def test_magnitude_rounds_are_geometric_down_to_the_budget():
    model = small_vgg()
    target = target_for(model, 0.35)
    keeps = baselines.magnitude_rounds(model, target, rate=0.2)
    weights = sum(m.weight.numel() for m, _ in baselines.prunable_weights(model))
    fixed = sizes.count_parameters(model) - weights
    steps = [weights] + keeps
    assert keeps[-1] == target - fixed and len(keeps) > 5
    assert all(0 < 1 - after / before <= 0.2 + 1e-3 for before, after in zip(steps, steps[1:]))
    with pytest.raises(ValueError, match="cannot be reached"):
        baselines.magnitude_rounds(model, fixed, rate=0.2)
    with pytest.raises(ValueError, match="rate"):
        baselines.magnitude_rounds(model, target, rate=1.0)


@pytest.mark.parametrize("retraining", baselines.RETRAINING)
def test_magnitude_pruning_reaches_the_budget_with_zeros(digits, retraining):
    (train_loader, _, _), _ = digits
    model = small_vgg()
    before = copy.deepcopy(model.state_dict())
    target = target_for(model, 0.5)
    pruned = baselines.magnitude_prune(model, train_loader, target, 1, retraining=retraining, progress=False)
    assert baselines.nonzero_parameters(pruned) == target
    assert sizes.count_parameters(pruned) == sizes.count_parameters(model)  # same dense shapes
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())  # zeros made permanent
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="retraining"):
        baselines.magnitude_prune(model, train_loader, target, 1, retraining="lottery")


def test_nonzero_parameters_counts_masks():
    layer = nn.Linear(4, 3)
    torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=5)
    assert baselines.nonzero_parameters(layer) == 12 - 5 + 3


@pytest.mark.parametrize("classifier", ["linear", "mlp"])
def test_torch_pruning_matches_the_folded_widths_and_keeps_top_l1_filters(classifier):
    model = small_vgg(classifier).eval()
    pruned = baselines.torch_pruning_l1(model, 0.5, (3, 32, 32)).eval()
    assert sizes.count_parameters(pruned) == target_for(model, 0.5)
    first, first_pruned = model.features[0], pruned.features[0]
    top = torch.sort(torch.topk(first.weight.abs().sum((1, 2, 3)), first_pruned.out_channels).indices).values
    x = tiny_batch(2)
    assert torch.allclose(first_pruned(x), first(x)[:, top], atol=1e-6)


def test_remove_channels_keeps_the_chosen_ones():
    model = small_vgg().eval()
    keep = {"features.0": torch.tensor([0, 2]), "features.3": torch.tensor([1])}
    pruned = baselines.remove_channels(model, keep, (3, 32, 32)).eval()
    assert pruned.features[0].out_channels == 2 and pruned.features[3].in_channels == 2
    assert pruned.features[3].out_channels == 1 and pruned.features[7].in_channels == 1
    x = tiny_batch(2)
    assert torch.allclose(pruned.features[0](x), model.features[0](x)[:, [0, 2]], atol=1e-6)
    with pytest.raises(ValueError, match="keep no channel"):
        baselines.remove_channels(model, {"features.0": torch.tensor([], dtype=torch.long)}, (3, 32, 32))


def test_widths_for_budget_are_the_widths_removal_gives():
    model = small_vgg()
    full = {name: layer.out_channels for name, layer in baselines._layers(model).items()}
    assert baselines.widths_for_budget(model, full, sizes.count_parameters(model)) == full
    target = target_for(model, 0.5)
    widths = baselines.widths_for_budget(model, {name: 1 + i % 2 for i, name in enumerate(full)}, target)
    removed = baselines.remove_channels(model, {name: torch.arange(k) for name, k in widths.items()}, (3, 32, 32))
    assert abs(sizes.count_parameters(removed) - target) / target < 0.05


def test_reinitialise_gives_fresh_weights_of_the_same_shape():
    model = small_vgg()
    with torch.no_grad():
        model.features[0].weight.fill_(1.0)
    model.features[1].running_mean.fill_(3.0)
    fresh = baselines.reinitialise(model)
    assert sizes.count_parameters(fresh) == sizes.count_parameters(model)
    assert not torch.equal(fresh.features[0].weight, model.features[0].weight)
    assert torch.equal(fresh.features[1].running_mean, torch.zeros_like(model.features[1].running_mean))


def test_channel_scores_attach_and_detach():
    model = small_vgg().eval()
    x = tiny_batch(3)
    reference = model(x)
    scores = baselines.attach_scores(model)
    assert set(scores) == {u.name for u in baselines.prunable_units(small_vgg())}
    model(x)
    first = scores["features.0"].scores
    assert first.shape == (model.features[0].out_channels,) and bool(((first > 0) & (first < 1)).all())
    baselines.detach_scores(model)
    assert not any(isinstance(m, baselines.ChannelScore) for m in model.modules())
    assert torch.equal(model(x), reference)


def test_autopruner_lambda_grows_tenfold_and_is_capped():
    assert [baselines.autopruner_lambda(e, 2) for e in range(5)] == [1, 1, 10, 10, 100]
    assert baselines.autopruner_lambda(1000, 1) == 1e7


def test_autopruner_search_moves_scores_towards_the_ratio_and_selection_meets_the_budget(digits):
    (train_loader, val_loader, _), shape = digits
    model = small_vgg()
    searched, scores = baselines.autopruner_search(model, train_loader, 0.5, 2, lambda_every=1, mu=10.0,
                                                   score_batches=3, progress=False)
    assert not any(isinstance(m, baselines.ChannelScore) for m in searched.modules())
    assert abs(sum(float(v.mean()) for v in scores.values()) / len(scores) - 0.5) < 0.15
    target = target_for(model, 0.5)
    selection = baselines.autopruner_selection(model, scores, target)
    pruned = baselines.remove_channels(searched, selection["keep"], shape)
    assert abs(sizes.count_parameters(pruned) - target) / target < 0.05
    assert all(len(selection["keep"][n]) == k for n, k in selection["widths"].items())
    assert 0 <= evaluate(pruned, val_loader, "classification")["acc"] <= 100
    with pytest.raises(ValueError, match="keep ratio"):
        baselines.autopruner_search(model, train_loader, 0.0, 1)


def test_compare_runs_every_arm_once_and_resumes(digits, tmp_path, monkeypatch):
    loaders, shape = digits
    model = small_vgg()
    protocol = comparison.ComparisonConfig(epochs=2, scratch_epochs=1, recipe=Recipe(ramp_epochs=1),
                                           autopruner_epochs=1)
    rows = comparison.compare(model, loaders, shape, [0.35], ["scratch", "autopruner_scratch", "autopruner",
                                                              "torch_pruning_l1"], protocol,
                              results_dir=tmp_path, progress=False)
    assert [r["method"] for r in rows] == ["torch_pruning_l1", "autopruner", "autopruner_scratch", "scratch"]
    by_method = {r["method"]: r for r in rows}
    assert by_method["autopruner_scratch"]["params"] == by_method["autopruner"]["params"]
    assert by_method["scratch"]["params"] == by_method["torch_pruning_l1"]["params"] == rows[0]["target_params"]
    assert by_method["scratch"]["epochs"] == 1 and by_method["autopruner"]["epochs"] == 2
    assert all(abs(r["param_fraction"] - 0.35) < 0.02 for r in rows)
    assert json.loads((tmp_path / "0.35_scratch.json").read_text())["val_acc"] == by_method["scratch"]["val_acc"]

    def no_rerun(*args, **kwargs):
        raise AssertionError("a finished arm ran again")

    monkeypatch.setattr(comparison, "run_arm", no_rerun)
    again = comparison.compare(model, loaders, shape, [0.35], ["torch_pruning_l1", "autopruner", "autopruner_scratch",
                                                               "scratch"], protocol, results_dir=tmp_path)
    assert again == rows

    def fresh_arm(method, *args, **kwargs):
        assert not (tmp_path / "0.35_checkpoints" / f"{method}.pt").exists(), "a fresh arm found old checkpoints"
        return None, {**by_method[method], "val_acc": -1.0}

    monkeypatch.setattr(comparison, "run_arm", fresh_arm)
    rerun = comparison.compare(model, loaders, shape, [0.35], ["scratch"], protocol, results_dir=tmp_path, resume=False)
    assert rerun[0]["val_acc"] == -1.0


def test_compare_rejects_bad_input(digits, tmp_path):
    loaders, shape = digits
    model = small_vgg()
    with pytest.raises(ValueError, match="unknown methods"):
        comparison.compare(model, loaders, shape, [0.35], ["obd"], results_dir=tmp_path)
    with pytest.raises(ValueError, match="list 'autopruner' too"):
        comparison.compare(model, loaders, shape, [0.35], ["autopruner_scratch"], results_dir=tmp_path)
    with pytest.raises(ValueError, match="fractions"):
        comparison.compare(model, loaders, shape, [1.5], ["scratch"], results_dir=tmp_path)
    with pytest.raises(ValueError, match="autopruner_epochs"):  # checked where AutoPruner runs
        comparison.compare(model, loaders, shape, [0.35], ["autopruner"], comparison.ComparisonConfig(epochs=3,
                           autopruner_epochs=3), results_dir=tmp_path)
    comparison.ComparisonConfig(epochs=3, autopruner_epochs=3).validate(["scratch"])
    with pytest.raises(ValueError, match="ramp_epochs"):  # the branches' recipe does not fit the epochs
        comparison.compare(model, loaders, shape, [0.35], ["branches"], comparison.ComparisonConfig(
                           epochs=3, recipe=Recipe(ramp_epochs=3)), results_dir=tmp_path)


def test_gaps_name_the_best_other_method():
    rows = [{"fraction": 0.35, "method": "branches", "val_acc": 78.0, "test_acc": 77.0},
            {"fraction": 0.35, "method": "torch_pruning_l1", "val_acc": 78.5, "test_acc": 78.0},
            {"fraction": 0.35, "method": "scratch", "val_acc": 76.0, "test_acc": 79.0},
            {"fraction": 0.12, "method": "branches", "val_acc": 72.0, "test_acc": 71.0},
            {"fraction": 0.12, "method": "scratch", "val_acc": 70.0, "test_acc": 70.5}]
    found = comparison.gaps(rows)
    assert [(g["fraction"], g["best_other"]) for g in found] == [(0.35, "torch_pruning_l1"), (0.12, "scratch")]
    assert found[0]["val_gap"] == pytest.approx(-0.5) and found[1]["test_gap"] == pytest.approx(0.5)
    structured = comparison.gaps(rows, among=["scratch"])
    assert [g["best_other"] for g in structured] == ["scratch", "scratch"]
    assert structured[0]["val_gap"] == pytest.approx(2.0)


def test_zeros_keep_the_dense_cost():
    model = small_vgg()
    rows = comparison.zeros_speed(model, [0.35], (3, 32, 32), (1,), min_run_time=0.01, repeats=1)
    by_variant = {r["variant"]: r for r in rows}
    macs = sizes.count_macs(model, (3, 32, 32))
    assert by_variant["magnitude (zeros)"]["macs"] == macs > by_variant["filter-pruned"]["macs"]
    assert by_variant["magnitude (zeros)"]["params"] == by_variant["filter-pruned"]["params"]
    assert all(r["speedup"] > 0 and r["s_per_image"] > 0 for r in rows)


def test_torch_pruning_prunes_a_resnet_to_the_widths_of_the_shared_selections():
    model = models.resnet_cifar(20, width=0.25).eval()
    pruned = baselines.torch_pruning_l1(model, 0.5, (3, 32, 32)).eval()
    folded = budget.pruned_and_folded(model, 0.5)
    assert sizes.count_parameters(pruned) == sizes.count_parameters(folded) < sizes.count_parameters(model) / 3
    assert sizes.count_macs(pruned, (3, 32, 32)) == sizes.count_macs(folded, (3, 32, 32))
    assert pruned.stage3[2].conv2.out_channels == pruned.fc.in_features == 8


def test_the_internal_arm_meets_the_budget_at_its_own_keep_ratio(digits, tmp_path):
    loaders, shape = digits
    model = models.resnet_cifar(20, width=0.25)
    protocol = comparison.ComparisonConfig(epochs=2, recipe=Recipe(ramp_epochs=1))
    rows = {r["method"]: r for r in comparison.compare(model, loaders, shape, [0.5], ["branches", "branches_internal"],
                                                       protocol, results_dir=tmp_path, progress=False)}
    assert rows["branches_internal"]["keep_ratio"] < rows["branches"]["keep_ratio"]
    target = rows["branches"]["params"]  # integer widths of a tiny network: the budget is met to a few per cent
    assert 0.95 * target <= rows["branches_internal"]["params"] <= 1.02 * target
    assert all(r["fold_relative_max_difference"] <= 1e-5 for r in rows.values())
    with pytest.raises(ValueError, match="internal units alone cannot meet the budget"):
        comparison.compare(model, loaders, shape, [0.05], ["branches_internal"], protocol, results_dir=tmp_path,
                           progress=False)


def test_the_projection_arm_prunes_to_the_same_widths_with_the_seeds_branch(digits, tmp_path):
    loaders, shape = digits
    model = models.vgg16(10, width=0.0625)
    protocol = comparison.ComparisonConfig(epochs=2, recipe=Recipe(ramp_epochs=1))
    methods = ["branches", "branches_projection"]
    rows = {r["method"]: r for r in comparison.compare(model, loaders, shape, [0.35], methods, protocol,
                                                       results_dir=tmp_path, progress=False)}
    assert rows["branches_projection"]["params"] == rows["branches"]["params"]
    assert rows["branches_projection"]["keep_ratio"] == rows["branches"]["keep_ratio"]
    assert all(r["fold_relative_max_difference"] <= 1e-5 for r in rows.values())
    assert rows["branches_projection"]["val_loss"] != rows["branches"]["val_loss"]  # another model was trained


def test_global_widths_meet_the_budget_and_follow_the_filters_not_the_layer_scale():
    model = models.vgg16(10, width=0.125)
    total = sizes.count_parameters(model)
    ratios = budget.global_keep_ratios(model, 0.35)
    assert sizes.count_parameters(budget.pruned_and_folded(model, ratios)) <= 0.35 * total
    with torch.no_grad():
        model.features[7].weight.mul_(10.0)  # one layer's scale: the scores are relative to its mean
        assert budget.global_keep_ratios(model, 0.35) == ratios
        model.features[10].weight[1:].mul_(1e-3)  # one filter dominates this unit: it keeps few channels
    assert budget.global_keep_ratios(model, 0.35, min_ratio=0.0)["features.10"] * 16 == 1 < ratios["features.10"] * 16
    assert budget.global_keep_ratios(model, 0.35)["features.10"] * 16 == 2  # at least a tenth: ceil(1.6)
    with pytest.raises(ValueError, match="one channel per unit"):
        budget.global_keep_ratios(model, 1e-5)


def test_the_global_arms_share_their_widths_and_meet_the_budget(digits, tmp_path):
    loaders, shape = digits
    model = models.resnet_cifar(20, width=0.25)
    protocol = comparison.ComparisonConfig(epochs=2, recipe=Recipe(ramp_epochs=1))
    methods = ["branches", "branches_global", "torch_pruning_l1_global"]
    rows = {r["method"]: r for r in comparison.compare(model, loaders, shape, [0.35], methods, protocol,
                                                       results_dir=tmp_path, progress=False)}
    assert rows["branches_global"]["widths"] == rows["torch_pruning_l1_global"]["widths"]
    assert rows["branches_global"]["params"] == rows["torch_pruning_l1_global"]["params"] <= rows["branches"]["params"]
    assert rows["branches_global"]["fold_relative_max_difference"] <= 1e-5
    widths = comparison.unit_widths(model, list(rows.values()))
    assert {w["method"] for w in widths} == {"uniform", "branches_global", "torch_pruning_l1_global"}
    assert all(1 <= w["kept"] <= w["channels"] for w in widths)


def test_compare_seeds_chooses_each_learning_rate_on_the_first_seed(tmp_path, monkeypatch):
    images = data.load_classification("embedded", seed=0)
    shape, model = tuple(images.x_train.shape[1:]), small_vgg()
    protocol = comparison.ComparisonConfig(epochs=2, scratch_epochs=1, recipe=Recipe(ramp_epochs=1))
    ran = []

    def fake_arm(method, baseline, keep_ratio, loaders, input_shape, config, *, seed=0, **kwargs):
        ran.append((method, config.lr, seed))
        score = {0.003: 50.0, 0.01: 60.0, 0.03: 40.0}[config.lr] if method == "branches" else 70.0 - 100 * config.lr
        score += seed + (5.0 if method == "scratch" else 0.0)
        return None, {"method": method, "keep_ratio": keep_ratio, "target_params": 100, "params": 100, "macs": 10,
                      "epochs": 1, "train_seconds": 1.0, "val_acc": score, "test_acc": score - 1, "val_loss": 0.0,
                      "test_loss": 0.0}

    monkeypatch.setattr(comparison, "run_arm", fake_arm)
    rows = comparison.compare_seeds(model, lambda seed: images.loaders(64, seed=seed), shape, [0.35],
                                    ["branches", "torch_pruning_l1", "scratch"], protocol, seeds=[0, 1, 2],
                                    lrs=[0.003, 0.01, 0.03], results_dir=tmp_path, progress=False)
    assert sorted(ran) == sorted([(m, lr, 0) for m in ("branches", "torch_pruning_l1") for lr in (0.003, 0.01, 0.03)]
                                 + [("scratch", 0.01, s) for s in (0, 1, 2)]  # run in the folder of config.lr
                                 + [("branches", 0.01, s) for s in (1, 2)] + [("torch_pruning_l1", 0.003, s)
                                                                              for s in (1, 2)])
    arms = {a["method"]: a for a in comparison.seed_summary(rows)}
    assert arms["branches"]["lr"] == 0.01 and arms["torch_pruning_l1"]["lr"] == 0.003
    assert arms["branches"]["seeds"] == 3 and arms["branches"]["test_acc"] == pytest.approx(60.0)
    assert arms["branches"]["test_std"] == pytest.approx(1.0) and arms["branches"]["lr_val"][0.03] == 40.0
    paired = {p["other"]: p for p in comparison.paired_differences(rows, "branches")}
    assert paired["scratch"]["test_diff"] == pytest.approx(60.0 - 74.0) and paired["scratch"]["test_diff_std"] == 0
    assert paired["torch_pruning_l1"]["seeds"] == 3
    assert (tmp_path / "seed1_lr0.003" / "0.35_torch_pruning_l1.json").is_file()
    ran.clear()  # every arm resumes from its file
    again = comparison.compare_seeds(model, lambda seed: images.loaders(64, seed=seed), shape, [0.35],
                                     ["branches", "torch_pruning_l1", "scratch"], protocol, seeds=[0, 1, 2],
                                     lrs=[0.003, 0.01, 0.03], results_dir=tmp_path, progress=False)
    assert ran == [] and again == rows
    with pytest.raises(ValueError, match="distinct"):
        comparison.compare_seeds(model, None, shape, [0.35], ["scratch"], seeds=[1, 1], results_dir=tmp_path)
    with pytest.raises(ValueError, match="learning rates"):
        comparison.compare_seeds(model, None, shape, [0.35], ["scratch"], lrs=[-0.1], results_dir=tmp_path)


def test_branches_on_autopruners_widths_share_its_budget_and_epochs(digits, tmp_path):
    loaders, shape = digits
    protocol = comparison.ComparisonConfig(epochs=3, autopruner_epochs=1, recipe=Recipe(ramp_epochs=1))
    rows = {r["method"]: r for r in comparison.compare(small_vgg(), loaders, shape, [0.35],
                                                       ["branches_autopruner", "autopruner"], protocol,
                                                       results_dir=tmp_path, progress=False)}
    ours, found = rows["branches_autopruner"], rows["autopruner"]
    assert ours["widths"] == found["widths"] and ours["params"] == found["params"]
    assert ours["epochs"] == found["epochs"] == 3 and ours["fold_relative_max_difference"] <= 1e-5
    with pytest.raises(ValueError, match="list 'autopruner' too"):
        comparison.check_methods(["branches_autopruner"])
    with pytest.raises(ValueError, match="ramp_epochs"):  # the branches' two epochs cannot hold a 2-epoch ramp
        comparison.ComparisonConfig(epochs=3, autopruner_epochs=1, recipe=Recipe(ramp_epochs=2)).validate(
            ["autopruner", "branches_autopruner"])
