import copy

import numpy as np
import pytest
import torch
from torch import nn

import pruning_utils as pu
from pruning_utils.engine import models
from pruning_utils.engine.sizes import count_parameters
from pruning_utils.method import branches


class Chain(nn.Module):
    """A custom module whose forward is a chain with a functional flatten."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.head(torch.flatten(self.body(x), 1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.b(self.a(x) + x)


def _randomise_batchnorm(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)


@pytest.mark.parametrize("init", ["he", "l1"])
@pytest.mark.parametrize("factory,shape", [(lambda: models.vgg16(width=0.125, classifier="mlp"), (2, 3, 32, 32)),
                                           (lambda: models.RGBAutoencoder(width=0.125), (2, 3, 128, 128)),
                                           (Chain, (2, 3, 8, 8))])
def test_alpha_one_equals_the_original_exactly(init, factory, shape):
    model = factory()
    _randomise_batchnorm(model)
    model.eval()
    x = torch.randn(shape)
    expected = model(x)
    pu.attach_branches(model, 0.5, init=init).eval()
    assert pu.get_alpha(model) == 1.0
    assert torch.equal(model(x), expected)


def test_alpha_zero_ignores_the_original_weights_and_sends_them_no_gradient():
    model = pu.attach_branches(models.vgg16(width=0.125), 0.5)
    pu.set_alpha(model, 0.0)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    for unit in branches.branched_units(model).values():
        for p in unit.original.parameters():
            p.data.normal_()
    assert torch.equal(model(x), before)
    model.train()
    model(x).sum().backward()
    units = branches.branched_units(model).values()
    assert all(p.grad is None for u in units for p in u.original.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for u in units for p in u.branch[0].parameters())


def test_gradients_reach_branches_and_originals_at_intermediate_alpha():
    model = pu.attach_branches(models.vgg16(width=0.125), 0.5)
    pu.set_alpha(model, 0.3)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    for unit in branches.branched_units(model).values():
        assert unit.branch[0].weight.grad.abs().sum() > 0
        assert unit.expand.weight.grad.abs().sum() > 0
        assert unit.original[0].weight.grad.abs().sum() > 0


def test_mixed_output_is_the_convex_combination():
    model = pu.attach_branches(Chain(), 0.5).eval()
    unit = branches.branched_units(model)["body.0"]
    x = torch.randn(2, 3, 8, 8)
    pu.set_alpha(model, 0.25)
    expected = 0.25 * unit.original(x) + 0.75 * unit.expand(unit.branch(x))
    assert torch.allclose(unit(x), expected, atol=1e-6)


def test_l1_init_is_a_filter_pruned_copy():
    model = models.vgg16(width=0.125)
    _randomise_batchnorm(model)
    model.eval()
    pu.attach_branches(model, 0.5, init="l1").eval()
    unit = branches.branched_units(model)["features.0"]
    norms = branches.filter_l1_norms(unit.original[0])
    keep = norms.topk(unit.kept).indices
    x = torch.randn(2, 3, 32, 32)
    masked = unit.original(x).clone()
    dropped = torch.ones(len(norms), dtype=torch.bool)
    dropped[keep] = False
    masked[:, dropped] = 0
    assert torch.allclose(unit.pruned(x), masked, atol=1e-6)


def test_kept_channels_and_ratio_dict():
    assert branches.kept_channels(128, 0.35) == 44
    assert branches.kept_channels(10, 0.01) == 1
    assert branches.kept_channels(128, 0.35, multiple=8) == 48
    model = pu.attach_branches(models.vgg16(width=0.25), {"features.0": 0.5, "features.3": 0.25})
    assert {n: u.kept for n, u in branches.branched_units(model).items()} == {"features.0": 8, "features.3": 4}


def test_include_exclude_prefixes():
    model = pu.attach_branches(models.RGBAutoencoder(width=0.125), 0.35, include=["encoder"], exclude=["encoder.0"])
    names = list(branches.branched_units(model))
    assert names and all(n.startswith("encoder.") for n in names) and "encoder.0" not in names
    assert branches.branched_units(model)["encoder.18"].kept == 44
    decoder = pu.attach_branches(models.RGBAutoencoder(width=0.125), 0.5, include="decoder")
    assert "decoder.9" not in branches.branched_units(decoder)  # the output layer is never pruned


@pytest.mark.parametrize("ratio", [0, 1.5, -0.1, "half", True])
def test_bad_keep_ratio(ratio):
    with pytest.raises(ValueError, match="keep ratio"):
        pu.attach_branches(models.vgg16(width=0.125), ratio)


def test_bad_ratio_names_include_and_alpha():
    with pytest.raises(ValueError, match="not prunable units"):
        pu.attach_branches(models.vgg16(width=0.125), {"classifier.0": 0.5})
    with pytest.raises(ValueError, match="matches no prunable unit"):
        pu.attach_branches(models.vgg16(width=0.125), 0.5, include=["encoder"])
    with pytest.raises(ValueError, match="init"):
        pu.attach_branches(models.vgg16(width=0.125), 0.5, init="xavier")
    model = pu.attach_branches(models.vgg16(width=0.125), 0.5)
    for alpha in (-0.1, 1.01, float("nan"), "0"):
        with pytest.raises(ValueError, match="alpha"):
            pu.set_alpha(model, alpha)
    with pytest.raises(ValueError, match="no branches"):
        pu.set_alpha(models.vgg16(width=0.125), 0.5)
    with pytest.raises(ValueError, match="already has branches"):
        pu.attach_branches(model, 0.5)


def test_unsupported_models_name_the_problem():
    with pytest.raises(branches.UnsupportedModelError, match="branch-and-merge"):
        pu.attach_branches(Residual(), 0.5)
    odd = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 4, 3))
    with pytest.raises(branches.UnsupportedModelError, match=r"'1' \(GroupNorm\)"):
        pu.attach_branches(odd, 0.5)


def test_alpha_is_saved_in_the_state_dict_and_restored():
    model = pu.attach_branches(models.vgg16(width=0.125), 0.5)
    pu.set_alpha(model, {"features.0": 0.2})
    pu.set_alpha(model, 0.0)
    pu.set_alpha(model, {"features.0": 0.1})
    state = copy.deepcopy(model.state_dict())
    fresh = pu.attach_branches(models.vgg16(width=0.125), 0.5)
    fresh.load_state_dict(state)
    alpha = pu.get_alpha(fresh)
    assert alpha["features.0"] == pytest.approx(0.1) and alpha["features.3"] == 0.0
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_freeze_original_keeps_pretrained_weights_fixed():
    model = pu.attach_branches(models.vgg16(width=0.125), 0.5)
    pu.freeze_original(model)
    unit = branches.branched_units(model)["features.0"]
    model.train()
    assert not unit.original.training and unit.branch.training
    assert not any(p.requires_grad for p in unit.original.parameters())
    pu.freeze_original(model, False)
    assert all(p.requires_grad for p in unit.original.parameters())


def test_compiled_training_step_keeps_one_graph_per_path_while_alpha_moves():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = pu.attach_branches(Chain(), 0.5).train()
    counter = CompileCounterWithBackend("aot_eager")  # with autograd, where a float alpha was specialised
    compiled = torch.compile(model, backend=counter)
    x = torch.randn(2, 3, 8, 8)
    frames = {}
    for alpha in (1.0, 0.9, 0.7, 0.55, 0.3, 0.1, 0.0, 0.2):
        pu.set_alpha(model, alpha)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = compiled(x)
        out.float().sum().backward()
        frames[alpha] = counter.frame_count
    assert frames[0.9] == frames[0.7] == frames[0.1] > frames[1.0]  # the alphas between share a graph
    assert frames[0.0] == frames[0.2] > frames[0.1]  # the branch alone, then the shared graph again
    model.eval()
    pu.set_alpha(model, 0.4)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-6)


class ShapeFlatten(nn.Module):
    """Conv -> ReLU -> a view sized by a shape query -> Linear -> Linear."""

    def __init__(self, flatten):
        super().__init__()
        self.conv, self.relu, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc, self.head = nn.Linear(8 * 4 * 4, 6), nn.Linear(6, 3)
        self.flatten = flatten

    def forward(self, x):
        return self.head(self.fc(self.flatten(self.pool(self.relu(self.conv(x))))))


@pytest.mark.parametrize("flatten", [lambda x: x.view(x.size(0), -1), lambda x: x.view(x.shape[0], -1),
                                     lambda x: x.reshape(x.shape[0], x.shape[1] * x.shape[2] * x.size(3)),
                                     lambda x: x.flatten(x.dim() - 3)],
                         ids=["size", "shape", "shape-arithmetic", "dim"])
def test_shape_queries_are_not_consumers_and_fold_exactly(flatten):
    model = pu.attach_branches(ShapeFlatten(flatten), 0.5)
    assert set(branches.branched_units(model)) == {"conv", "fc"}
    for unit in branches.branched_units(model).values():
        unit.expand.weight.data.normal_()
    pu.set_alpha(model, 0.0)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    folded = pu.fold(model).eval()
    assert torch.allclose(folded(x), model(x), atol=1e-5)
    assert folded.conv.out_channels == 4


@pytest.mark.parametrize("layers, name", [
    ([nn.Linear(6, 8), nn.MaxPool1d(2), nn.Linear(4, 3)], r"'1' \(MaxPool1d\) after unit '0' \(Linear\)"),
    ([nn.Linear(6, 8), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Linear(4, 3)], r"'2' \(AdaptiveAvgPool1d\)"),
    ([nn.Conv2d(3, 8, 1), nn.BatchNorm1d(8), nn.Flatten(), nn.Linear(8, 3)], r"'1' \(BatchNorm1d\) after unit '0'"),
    ([nn.ConvTranspose2d(3, 8, 1), nn.Dropout1d(), nn.Flatten(), nn.Linear(8, 3)], r"'1' \(Dropout1d\)"),
])
def test_post_ops_that_do_not_fit_the_layer_are_refused(layers, name):
    with pytest.raises(branches.UnsupportedModelError, match=name):
        pu.attach_branches(nn.Sequential(*layers), 0.5)


def test_post_ops_that_fit_are_still_accepted():
    linear = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout1d(), nn.Linear(8, 3))
    conv = nn.Sequential(nn.Conv2d(3, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Upsample(scale_factor=2), nn.Flatten(),
                         nn.Linear(32, 3))
    for model, x in ((linear, torch.randn(4, 6)), (conv, torch.randn(4, 3, 5, 5))):
        pu.attach_branches(model, 0.5)
        pu.set_alpha(model, 0.5)
        assert model(x).shape == (4, 3)


@pytest.mark.parametrize("ratio", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), np.array(0.5), 0.5])
def test_keep_ratio_accepts_any_real_scalar(ratio):
    assert branches.check_keep_ratio(ratio) == 0.5 and branches.check_keep_ratio(np.int64(1)) == 1.0
    model = pu.attach_branches(models.vgg16(width=0.125), ratio)
    assert branches.branched_units(model)["features.0"].kept == 4


@pytest.mark.parametrize("ratio", [float("nan"), np.float32("nan"), np.bool_(True), torch.tensor(True), "0.5",
                                   torch.tensor([0.5]), 0.0, -1, 1.01, None])
def test_check_keep_ratio_refuses_non_ratios(ratio):
    with pytest.raises(ValueError, match=r"keep ratio for 'x' must be in \(0, 1\]"):
        branches.check_keep_ratio(ratio, "for 'x'")


def test_bench_uses_the_shared_keep_ratio_check():
    from pruning_utils.studies import bench

    assert bench.check_keep_ratio is branches.check_keep_ratio


def test_integer_widths_name_the_kept_channels_exactly():
    model = pu.attach_branches(models.vgg16(width=0.125), widths={"features.0": 3, "features.3": 5})
    assert {n: u.kept for n, u in branches.branched_units(model).items()} == {"features.0": 3, "features.3": 5}
    for bad, message in (({"features.0": 0}, "integer in \\[1, 8\\]"), ({"features.0": 2.0}, "integer"),
                         ({"nope": 2}, "not prunable units")):
        with pytest.raises(ValueError, match=message):
            pu.attach_branches(models.vgg16(width=0.125), widths=bad)
    with pytest.raises(ValueError, match="either keep_ratio or widths"):
        pu.attach_branches(models.vgg16(width=0.125), 0.5, widths={"features.0": 3})


def _fused_and_apart(model, alpha=0.4):
    pu.set_alpha(model, alpha)
    fused, apart = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    for unit in branches.branched_units(apart).values():
        unit.fuse_paths = False
    return fused, apart


@pytest.mark.parametrize("build", [lambda: models.vgg16(width=0.125), lambda: models.resnet_cifar(20, width=0.25)],
                         ids=["vgg16", "resnet20"])
def test_one_convolution_for_both_paths_changes_nothing_but_the_calls(build):
    torch.manual_seed(0)
    fused, apart = _fused_and_apart(pu.attach_branches(build(), 0.59))
    assert all(u.fuse_paths for u in branches.branched_units(fused).values())
    x = torch.randn(8, 3, 32, 32)
    for model in (fused, apart):
        for _ in range(2):  # the running statistics move twice
            model.zero_grad()
            model(x).square().mean().backward()
    assert torch.allclose(fused(x), apart(x), atol=1e-5)
    fused_grads, apart_grads = dict(fused.named_parameters()), dict(apart.named_parameters())
    scale = max(g.grad.abs().max() for g in apart_grads.values() if g.grad is not None)
    for name, parameter in apart_grads.items():
        assert torch.allclose(fused_grads[name].grad, parameter.grad, atol=1e-5 * scale, rtol=1e-4), name
    for name, value in apart.state_dict().items():
        assert torch.allclose(fused.state_dict()[name].float(), value.float(), atol=1e-6), name


def test_paths_run_apart_where_they_cannot_share_a_convolution():
    frozen, _ = _fused_and_apart(pu.attach_branches(models.vgg16(width=0.125), 0.59))
    pu.freeze_original(frozen)  # the original's BatchNorms in eval mode, the branch's training
    reference = copy.deepcopy(frozen)
    for unit in branches.branched_units(reference).values():
        unit.fuse_paths = False
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(frozen(x), reference(x), atol=1e-6)
    decoder = pu.attach_branches(models.RGBAutoencoder(width=0.125), 0.5, include=["decoder"])
    assert not any(u.fuse_paths for u in branches.branched_units(decoder).values())  # ConvTranspose2d
    dropout = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Dropout(0.5), nn.ReLU(), nn.Conv2d(8, 2, 1))
    assert not branches.branched_units(pu.attach_branches(dropout, 0.5))["0"].fuse_paths  # masks would differ


# --------------------------------------------------------------------------------------------
# The seeds' projection branch
# --------------------------------------------------------------------------------------------
def _train_mixed(model, shape, steps=2, alpha=0.5):
    pu.set_alpha(model, alpha)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = model(torch.randn(shape)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("factory, shape", [
    (lambda: models.vgg16(10, width=0.125, classifier="mlp"), (2, 3, 32, 32)),  # Conv2d and Linear units
    (lambda: models.RGBAutoencoder(width=0.0625, bottleneck=8), (2, 3, 64, 64)),  # ConvTranspose2d units
    (lambda: models.resnet_cifar(20, width=0.25), (2, 3, 32, 32)),  # a graph: learned E and shared selections
])
def test_projection_branches_share_the_layer_and_fold_exactly(factory, shape):
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(shape)
    projected = pu.attach_branches(copy.deepcopy(model), 0.5, branch_kind="projection")
    conv = pu.attach_branches(copy.deepcopy(model), 0.5, branch_kind="conv")
    for unit in branches.branched_units(projected).values():
        assert unit.branch[0].layer is unit.original[0]  # one set of weights W for both paths
    pu.set_alpha(projected, 0.0)
    pu.set_alpha(conv, 0.0)
    assert torch.allclose(projected.eval()(x), conv.eval()(x), atol=1e-6)  # the L1 start: the same branch
    _train_mixed(projected, shape)
    pu.set_alpha(projected, 0.0)
    folded = pu.fold(projected.eval()).eval()
    reference = projected(x)
    assert (folded(x) - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert count_parameters(folded) == count_parameters(pu.fold(conv))  # the same folded architecture


def test_projection_runs_the_layer_once_in_the_mixed_phase_and_trains_it_through_the_branch():
    torch.manual_seed(0)
    model = pu.attach_branches(models.vgg16(10, width=0.125), 0.5, branch_kind="projection")
    unit = next(iter(branches.branched_units(model).values()))
    calls = []
    unit.original[0].register_forward_hook(lambda *args: calls.append(1))
    pu.set_alpha(model, 0.5)
    model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 1
    pu.set_alpha(model, 0.0)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert unit.original[0].weight.grad is not None  # at alpha = 0 the shared W still learns, through P


def test_projection_state_dict_round_trip_keeps_the_shared_layer():
    torch.manual_seed(0)
    model = pu.attach_branches(models.vgg16(10, width=0.125), 0.5, branch_kind="projection", init="he")
    _train_mixed(model, (2, 3, 32, 32))
    shell = pu.attach_branches(models.vgg16(10, width=0.125), 0.5, branch_kind="projection", init="he")
    shell.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(shell.eval()(x), model.eval()(x))
    unit = next(iter(branches.branched_units(shell).values()))
    assert unit.branch[0].layer is unit.original[0]


def test_unknown_branch_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        pu.attach_branches(models.vgg16(10, width=0.125), 0.5, branch_kind="1x1")
    with pytest.raises(ValueError, match="branch_kind must be one of"):
        pu.Recipe(branch_kind="1x1").validate()
