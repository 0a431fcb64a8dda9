"""Models that are not chains (pruning_utils.method.graph): residuals, concatenations, reused modules."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_folding import _perturb, _relative_error
from torch import nn

import pruning_utils as pu
from pruning_utils.engine import models, sizes
from pruning_utils.method import branches


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _check_graph(model, x, spec=0.5, **options):
    """alpha = 1 exact, fold exact at alpha = 0 (also with BatchNorm fused), every branched unit narrower, branches
    as planned; the plan (by unit) and the folded model."""
    torch.manual_seed(0)
    model = _perturb(model).eval()
    with torch.no_grad():
        expected = model(x)
    before = _params(model)
    plan = pu.branch_plan(model, spec, **options)
    branched = pu.attach_branches(model, spec, **options).eval()
    with torch.no_grad():
        assert torch.equal(branched(x), expected)
    units = branches.branched_units(branched)
    assert set(units) == {e["name"] for e in plan if e["kind"] != "left alone"}
    pu.set_alpha(_perturb(branched), 0.0)
    folded = pu.fold(branched).eval()
    with torch.no_grad():
        assert _relative_error(folded(x), branched(x)) <= 1e-5
        assert _relative_error(pu.fold(branched, fuse_bn=True)(x), branched(x)) <= 1e-5
    assert not any(isinstance(m, branches.BranchedUnit) for m in folded.modules())
    assert all(type(m).__module__.startswith("torch.nn") for m in folded.modules() if not list(m.children()))
    assert _params(folded) < before
    for name, unit in units.items() if isinstance(folded, torch.fx.GraphModule) else ():  # chains: flat names
        assert branches.out_channels(folded.get_submodule(name)[0]) == unit.kept
    return {e["name"]: e for e in plan}, folded


def _kinds(plan, kind):
    return {name for name, entry in plan.items() if entry["kind"] == kind}


def test_resnet18_prunes_its_blocks_and_the_coupled_residual_channels():
    plan, folded = _check_graph(torchvision.models.resnet18(num_classes=10), torch.randn(1, 3, 16, 16))
    assert _kinds(plan, "learned E") == {f"layer{i}.{j}.conv1" for i in range(1, 5) for j in range(2)}
    stage1 = ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert plan["layer1.1.conv2"]["group"] == stage1 and plan["conv1"]["kept"] == 32
    assert plan["layer2.0.downsample.0"]["group"] == ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"]
    assert _kinds(plan, "left alone") == {"fc"} and "model's output" in plan["fc"]["reason"]
    assert plan["layer3.0.conv1"]["reason"] == "E folds into 'layer3.0.conv2'"
    assert folded.get_submodule("layer4.1.conv2")[0].out_channels == 256
    assert folded.get_submodule("layer4.1.conv1")[0].in_channels == 256 and folded.fc.in_features == 256
    without = pu.branch_plan(torchvision.models.resnet18(num_classes=10), 0.5, shared_selection=False)
    assert {e["name"] for e in without if e["kind"] != "left alone"} == _kinds(plan, "learned E")
    assert "addition" in next(e for e in without if e["name"] == "layer1.0.conv2")["reason"]


def test_the_coupled_channels_keep_one_subset_ranked_over_the_group():
    original = torchvision.models.resnet18(num_classes=10)
    model = pu.attach_branches(copy.deepcopy(original), 0.25)
    stage = ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    selections = [model.get_submodule(name).expand for name in stage]
    assert all(isinstance(s, branches.ChannelSelection) and s.index.numel() == 16 for s in selections)
    assert all(torch.equal(s.index, selections[0].index) for s in selections)
    summed = sum(branches.filter_l1_norms(original.get_submodule(name)) for name in stage)
    assert torch.equal(selections[0].index, summed.topk(16).indices.sort().values)
    assert not any(p.requires_grad for s in selections for p in s.parameters())  # E fixed: nothing to train


def test_asking_for_a_unit_that_cannot_fold_names_it():
    model = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(branches.UnsupportedModelError, match=r"'layer1.0.conv2' \(graph node 'layer1_0_conv2'\).*addition"):
        pu.attach_branches(model, {"layer1.0.conv2": 0.5}, shared_selection=False)
    with pytest.raises(branches.UnsupportedModelError, match="'fc'.*model's output"):
        pu.attach_branches(model, widths={"fc": 3})
    one = pu.attach_branches(model, {"layer1.0.conv1": 0.25}, channel_multiple=8)
    assert {n: u.kept for n, u in branches.branched_units(one).items()} == {"layer1.0.conv1": 16}
    plan = pu.branch_plan(torchvision.models.resnet18(num_classes=10), widths={"layer2.1.conv1": 5})
    assert [(e["name"], e["kept"]) for e in plan if e["kind"] != "left alone"] == [("layer2.1.conv1", 5)]
    group = pu.branch_plan(model, widths={"layer1.1.conv2": 24})  # one member named: its whole group
    assert [(e["name"], e["kept"]) for e in group if e["kind"] != "left alone"] == [
        ("conv1", 24), ("layer1.0.conv2", 24), ("layer1.1.conv2", 24)]
    with pytest.raises(ValueError, match=r"share one selection.*give them one width, not \[16, 24\]"):
        pu.branch_plan(model, widths={"layer1.1.conv2": 24, "conv1": 16})
    with pytest.raises(ValueError, match="prefix 'layer9'"):
        pu.branch_plan(model, 0.5, exclude=["layer9"])


def test_excluding_part_of_a_group_leaves_the_group_alone():
    plan = {e["name"]: e for e in pu.branch_plan(torchvision.models.resnet18(num_classes=10), 0.5,
                                                 exclude=["layer1.1.conv2"])}
    assert {plan[n]["kind"] for n in ("conv1", "layer1.0.conv2", "layer1.1.conv2")} == {"left alone"}
    assert plan["layer1.0.conv1"]["kind"] == "learned E" and plan["layer2.0.conv2"]["kind"] == "shared selection"
    assert plan["conv1"]["reason"].startswith("not selected")


class NormAfterAdd(nn.Module):
    """A residual whose sum goes through a BatchNorm: zeros in pruned channels would not stay zero."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.norm, self.head = nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.conv1(x)
        return self.head(self.norm(self.conv2(y) + y))


def test_a_stream_through_a_batchnorm_after_the_addition_keeps_its_width():
    plan = {e["name"]: e for e in pu.branch_plan(NormAfterAdd(), 0.5)}
    assert plan["conv1"]["kind"] == "left alone" and plan["conv1"]["group"] == ["conv1", "conv2"]
    assert "'norm' (BatchNorm2d" in plan["conv1"]["reason"] and "zero channels" in plan["conv1"]["reason"]
    with pytest.raises(branches.UnsupportedModelError, match="no unit of NormAfterAdd can get a branch"):
        pu.attach_branches(NormAfterAdd(), 0.5)
    with pytest.raises(branches.UnsupportedModelError, match="'conv2'.*nor a shared selection.*'norm'"):
        pu.branch_plan(NormAfterAdd(), {"conv2": 0.5})


def test_a_cifar_resnet_with_projection_shortcuts_prunes_all_but_its_head(tmp_path):
    model = models.resnet_cifar(20, width=0.5)
    plan, folded = _check_graph(model, torch.randn(2, 3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(pu.load_plain(pu.save_plain(folded, tmp_path / "resnet.pt"))(x), folded(x))
    assert _kinds(plan, "left alone") == {"fc"}
    assert plan["stage3.0.shortcut.0"]["group"] == ["stage3.0.conv2", "stage3.0.shortcut.0", "stage3.1.conv2",
                                                    "stage3.2.conv2"]
    assert sizes.count_macs(folded, (3, 32, 32)) < 0.35 * sizes.count_macs(model, (3, 32, 32))


def test_mobilenet_v2_branches_what_folds_and_reports_the_depthwise_convolutions():
    plan, _ = _check_graph(torchvision.models.mobilenet_v2(num_classes=10), torch.randn(1, 3, 16, 16))
    assert _kinds(plan, "learned E") == {"features.1.conv.1", "features.17.conv.2", "features.18.0"}
    assert plan["features.3.conv.2"]["group"] == ["features.2.conv.2", "features.3.conv.2"]
    assert plan["features.3.conv.2"]["kind"] == "shared selection"
    assert plan["features.2.conv.1.0"]["reason"].startswith("it is a grouped convolution (groups=96)")
    assert "feeds the grouped convolution 'features.2.conv.1.0'" in plan["features.2.conv.0.0"]["reason"]


class UNet(nn.Module):
    """Two levels: a skip by torch.cat after the upsampling ConvTranspose2d, a 1x1 head."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        skip = self.enc1(x)
        return self.head(self.dec(torch.cat([skip, self.up(self.enc2(self.pool(skip)))], 1)))


def test_unet_folds_the_upsampling_into_its_slice_of_the_concatenation(tmp_path):
    plan, folded = _check_graph(UNet(), torch.randn(2, 3, 8, 8))
    assert _kinds(plan, "learned E") == {"enc1.0", "enc2.0", "up", "dec.0"}
    assert plan["enc1.3"]["kind"] == "shared selection" and plan["enc1.3"]["group"] == ["enc1.3"]
    assert plan["enc1.3"]["reason"].startswith("'pool' (MaxPool2d") and "a selection of its filters" in plan["enc1.3"]["reason"]
    assert folded.get_submodule("dec.0.0").in_channels == 4 + 4  # the skip's 4 selected channels, the upsampling's 4
    loaded = pu.load_plain(pu.save_plain(folded, tmp_path / "unet.pt"))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(loaded(x), folded(x))
    saved = torch.load(tmp_path / "unet.pt", weights_only=True)
    next(n for n in saved["architecture"]["nodes"] if n["target"] == "torch.cat")["target"] = "torch.save"
    torch.save(saved, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'torch.save'.*does not allow"):
        pu.load_plain(tmp_path / "bad.pt")


def test_graph_alpha_is_in_the_state_dict_and_fold_refuses_nonzero_alpha():
    model = pu.attach_branches(UNet(), 0.5)
    pu.set_alpha(model, {"up": 0.3})
    fresh = pu.attach_branches(UNet(), 0.5)
    fresh.load_state_dict(copy.deepcopy(model.state_dict()))
    assert pu.get_alpha(fresh)["up"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="alpha = 0"):
        pu.fold(fresh)
    with pytest.raises(ValueError, match="keep ratio"):
        pu.attach_branches(UNet(), 1.5)


class TwiceNormed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.bn, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.bn(self.conv1(x))
        return self.head(self.bn(self.conv2(y)) + y)


def test_a_stateful_module_called_twice_is_refused_by_name():
    with pytest.raises(branches.UnsupportedModelError, match=r"'bn' \(BatchNorm2d\).*called at 2 places"):
        pu.attach_branches(TwiceNormed(), 0.5)


class Dag(nn.Module):
    """Blocks of conv -> BatchNorm -> ReLU (a module or F.relu), each joined to its input as a chain, a residual
    addition or a concatenation; then average pooling, flatten and a Linear head."""

    def __init__(self, blocks, size):
        super().__init__()
        self.joins, self.functional = [b[0] for b in blocks], [b[3] for b in blocks]
        channels, convs = 3, []
        for join, out, kernel, _ in blocks:
            convs.append(nn.Conv2d(channels, out, kernel, padding=kernel // 2))
            channels = channels + out if join == "cat" else out
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(nn.BatchNorm2d(c.out_channels) for c in convs)
        self.relu, self.pool = nn.ReLU(), nn.AdaptiveAvgPool2d(size)
        self.head = nn.Linear(channels * size * size, 3)

    def forward(self, x):
        for conv, norm, join, functional in zip(self.convs, self.norms, self.joins, self.functional):
            y = norm(conv(x))
            y = F.relu(y) if functional else self.relu(y)
            x = y if join == "chain" else x + y if join == "add" else torch.cat([x, y], 1)
        return self.head(torch.flatten(self.pool(x), 1))


@st.composite
def dags(draw):
    blocks, channels = [], 3
    for _ in range(draw(st.integers(1, 4))):
        join = draw(st.sampled_from(["chain", "add", "cat"]))
        out = channels if join == "add" else draw(st.integers(2, 6))
        blocks.append((join, out, draw(st.sampled_from([1, 3])), draw(st.booleans())))
        channels = channels + out if join == "cat" else out
    return Dag(blocks, draw(st.sampled_from([1, 2]))), draw(st.floats(0.2, 0.9))


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dags_fold_exactly(case):
    model, ratio = case
    plan = pu.branch_plan(model, ratio)
    assume(any(e["kind"] != "left alone" and e["kept"] < e["channels"] for e in plan))
    assert all(e["reason"] for e in plan)
    _check_graph(model, torch.randn(2, 3, 6, 6), ratio)
