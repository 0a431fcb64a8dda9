"""Branch, fold and measure torchvision's resnet18 at keep ratio 0.5, with and without the shared selections of the
residual channels (the README and the closing note of issue 15 quote it):

    .venv/bin/python tests/examples/resnet18_fold.py
"""
from collections import Counter

import torch
import torchvision

import pruning_utils as pu
from pruning_utils.method.branches import branched_units
from pruning_utils.engine.sizes import count_macs, count_parameters


def randomised(model):
    """BatchNorm statistics and E away from their initial values, so the fold is tested on more than an identity."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


torch.manual_seed(0)
original = randomised(torchvision.models.resnet18(num_classes=10)).eval()
x = torch.randn(4, 3, 224, 224)
for shared_selection in (False, True):
    plan = pu.branch_plan(original, 0.5, shared_selection=shared_selection)
    branched = pu.attach_branches(original, 0.5, shared_selection=shared_selection)
    pu.set_alpha(branched, 0.0)
    for unit in branched_units(branched).values():
        if hasattr(unit.expand, "weight"):  # a learned E
            unit.expand.weight.data.normal_(0, 0.5)
    branched.eval()
    with torch.no_grad():
        reference = branched(x)
        errors = {fuse: ((pu.fold(branched, fuse_bn=fuse)(x) - reference).abs().max() / reference.abs().max()).item()
                  for fuse in (False, True)}
    folded = pu.fold(branched)
    print(f"shared_selection={shared_selection}: {dict(Counter(e['kind'] for e in plan))}")
    print(f"  parameters {count_parameters(original):,} -> {count_parameters(folded):,}, MACs (3x224x224) "
          f"{count_macs(original, (3, 224, 224)):,} -> {count_macs(folded, (3, 224, 224)):,}")
    print(f"  fold error (relative max difference) {errors[False]:.1e}, with BatchNorm fused {errors[True]:.1e}")
