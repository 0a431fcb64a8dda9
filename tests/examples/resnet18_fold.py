"""Branch, fold and measure torchvision resnet18 at keep ratio 0.5 (the README and the closing note of issue 19-21 quote it):

    .venv/bin/python tests/examples/resnet18_fold.py
"""
import torch
import torchvision

import pruning_utils as pu
from pruning_utils.engine.sizes import count_parameters

torch.manual_seed(0)
m = torchvision.models.resnet18(num_classes=10).eval()
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.uniform_(-0.5, 0.5); mod.running_var.uniform_(0.5, 2.0)
plan = pu.branch_plan(m, 0.5)
b = pu.attach_branches(m, 0.5); pu.set_alpha(b, 0.0); b.eval()
f = pu.fold(b).eval(); x = torch.randn(4, 3, 32, 32)
with torch.no_grad():
    ref = b(x); err = ((f(x) - ref).abs().max() / ref.abs().max()).item()
print([p["name"] for p in plan if p["kind"] == "learned E"])
print(count_parameters(m), "->", count_parameters(f), "fold error", f"{err:.1e}")
