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


def test_stage_mode_shows_the_weights_trained_at_the_nearest_alpha(branched, tmp_path):
    from pruning_utils.engine import data
    from pruning_utils.method import schedules
    from pruning_utils.method.pruning import load_stage

    photos = torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8)
    train, val = data.BatchLoader(photos, None, 4, shuffle=True), data.BatchLoader(photos[:4], None, 4)
    pu.set_alpha(branched, 1.0)
    pu.prune(branched, train, val, schedules.make_schedule("explicit", 1, values=[0.6, 0.0]), task="reconstruction",
             checkpoint_dir=tmp_path, progress=False)
    images = photos[:2].float() / 255
    box = alpha_explorer(branched, images, alpha=0.55, checkpoint_dir=tmp_path)
    final = box.reconstruction.value
    assert box.caption.value == "final weights"
    box.mode.value = "as trained at this alpha"
    assert box.caption.value == "weights after stage 0 (trained to alpha 0.60)" and box.reconstruction.value != final
    assert box.reconstruction.value == to_png(outputs_at_alpha(load_stage(branched, tmp_path, 0), images[:1], 0.55)[0])
    box.slider.value = 0.1
    assert box.caption.value.startswith("weights after stage 1")
    assert "as trained at this alpha" not in alpha_explorer(branched, images).mode.options  # no run given
