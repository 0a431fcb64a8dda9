import math

import pytest
import torch

import pruning_utils as pu
from pruning_utils.engine import models
from pruning_utils.harness.widgets import alpha_explorer, to_png
from pruning_utils.method.pipeline import outputs_at_alpha


@pytest.fixture
def branched():
    torch.manual_seed(0)
    model = pu.attach_branches(models.RGBAutoencoder(width=0.125), 0.35, include=["encoder"])
    pu.set_alpha(model, 0.0)
    return model


def test_slider_and_chooser_redraw_without_touching_the_model(branched):
    images = torch.rand(2, 3, 128, 128)
    box = alpha_explorer(branched, images, alpha=0.0)
    at_zero, original = box.reconstruction.value, box.original.value
    box.slider.value = 1.0
    assert box.reconstruction.value != at_zero
    assert box.reconstruction.value == to_png(outputs_at_alpha(branched, images[:1], 1.0)[0])
    pu.set_alpha(branched, 0.0)
    box.chooser.value = 1
    assert box.original.value != original
    assert pu.get_alpha(branched) == 0.0


def test_png_is_enlarged(branched):
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(to_png(torch.rand(3, 16, 16), scale=3))).size == (48, 48)


def test_reconstruction_rows_are_labelled_with_their_psnr(tmp_path):
    from pruning_utils.harness import plots

    original = torch.rand(2, 3, 8, 8)
    fig = plots.plot_reconstructions({"original": original, "noisy": (original + 0.1).clamp(0, 1)}, tmp_path / "r.png")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    mse = torch.nn.functional.mse_loss((original + 0.1).clamp(0, 1), original).item()
    assert labels == ["original", f"noisy\n{10 * math.log10(1 / mse):.1f} dB"]
