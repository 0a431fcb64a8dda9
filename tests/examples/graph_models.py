"""Branch, fold and measure the graph test models at keep ratio 0.5, with and without the shared selections of the
residual channels (the README and the closing note of issue 15 quote it):

    .venv/bin/python tests/examples/graph_models.py

Per model and setting: the units of each kind, parameters and MACs before -> after the fold, and the fold error
(relative max difference to the alpha = 0 model; BatchNorm statistics and learned E randomised), also with the
BatchNorms fused.
"""
import sys
from collections import Counter
from pathlib import Path

import torch
import torchvision
from torch import nn

import pruning_utils as pu
from pruning_utils.engine.models import resnet_cifar
from pruning_utils.engine.sizes import count_macs, count_parameters
from pruning_utils.method.branches import branched_units

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_graphs import UNet  # noqa: E402  (the U-Net of the tests)


def vgg11_bn():
    model = torchvision.models.vgg11_bn(num_classes=10)
    model.classifier = nn.Sequential(nn.Dropout(), nn.Linear(512 * 7 * 7, 10))  # the 4096-wide layers: slow to copy
    return model


MODELS = {"resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 224, 224)),
          "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), (3, 224, 224)),
          "vgg11_bn": (vgg11_bn, (3, 32, 32)),
          "resnet20 (CIFAR, width 1)": (lambda: resnet_cifar(20), (3, 32, 32)),
          "U-Net (tests)": (UNet, (3, 32, 32))}


def randomised(model):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def measure(name, build, shape, shared_selection):
    torch.manual_seed(0)
    original = randomised(build()).eval()
    plan = pu.branch_plan(original, 0.5, shared_selection=shared_selection)
    branched = pu.attach_branches(original, 0.5, shared_selection=shared_selection)
    pu.set_alpha(branched, 0.0)
    for unit in branched_units(branched).values():
        if hasattr(unit.expand, "weight"):  # a learned E
            unit.expand.weight.data.normal_(0, 0.5)
    branched.eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        reference = branched(x)
        errors = [((pu.fold(branched, fuse_bn=fuse)(x) - reference).abs().max() / reference.abs().max()).item()
                  for fuse in (False, True)]
    folded = pu.fold(branched)
    kinds = ", ".join(f"{n} {k}" for k, n in Counter(e["kind"] for e in plan).items())
    print(f"| {name} | {'x'.join(map(str, shape))} | {shared_selection} | {kinds} | {count_parameters(original):,} -> "
          f"{count_parameters(folded):,} | {count_macs(original, shape):,} -> {count_macs(folded, shape):,} | "
          f"{errors[0]:.1e} / {errors[1]:.1e} |")


print("| model | input | shared_selection | units | parameters | MACs | fold error (plain / BN fused) |")
print("|---|---|---|---|---|---|---|")
for name, (build, shape) in MODELS.items():
    for shared_selection in (False, True):
        measure(name, build, shape, shared_selection)
