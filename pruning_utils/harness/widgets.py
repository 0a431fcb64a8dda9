"""Interactive exploration in JupyterLab: an alpha slider that redraws a branched model's reconstruction."""
from __future__ import annotations

import copy
import io

import numpy as np
import torch
from torch import nn

from ..engine.checkpoints import load_checkpoint
from ..method.pipeline import outputs_at_alpha
from ..method.pruning import load_stage, stage_checkpoints


def to_png(image: torch.Tensor, scale: int = 2) -> bytes:
    """PNG bytes of a 3 x H x W image in [0, 1], enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def stage_alphas(checkpoint_dir) -> dict[int, float]:
    """{stage: the alpha its checkpoint was saved at (the units' mean where they differ)} of a pruning run."""
    alphas = {}
    for stage, path in stage_checkpoints(checkpoint_dir).items():
        alpha = load_checkpoint(path)["alpha"]
        alphas[stage] = alpha if isinstance(alpha, float) else sum(alpha.values()) / len(alpha)
    return alphas


def alpha_explorer(model: nn.Module, images: torch.Tensor, labels: list[str] | None = None, alpha: float = 0.0,
                   step: float = 0.05, scale: int = 2, checkpoint_dir=None):
    """A widget: a slider over alpha and a choice of image, redrawing the mixed model's reconstruction live.

    ``images``: N x 3 x H x W in [0, 1]. The widget works on a copy of ``model`` (the final weights). With the
    run's ``checkpoint_dir`` a second mode shows the model as it was during training: the weights of the stage
    checkpoint whose alpha is nearest the slider's (stepwise schedules save one per alpha; a ramp only its end).
    Returns an ``ipywidgets.VBox`` with attributes ``slider``, ``chooser``, ``mode``, ``original``,
    ``reconstruction`` and ``caption``.
    """
    import ipywidgets as widgets

    final = copy.deepcopy(model)
    alphas = stage_alphas(checkpoint_dir) if checkpoint_dir is not None else {}
    stages: dict[int, nn.Module] = {}  # loaded on first use
    labels = labels or [f"image {i}" for i in range(len(images))]
    slider = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=step, description="alpha",
                                 continuous_update=True, readout_format=".2f")
    chooser = widgets.Dropdown(options=[(label, i) for i, label in enumerate(labels)], value=0, description="image")
    mode = widgets.ToggleButtons(options=["final weights"] + (["as trained at this alpha"] if alphas else []),
                                 value="final weights")
    original, reconstruction = widgets.Image(format="png"), widgets.Image(format="png")
    caption = widgets.Label()

    def weights():
        if mode.value == "final weights":
            caption.value = "final weights"
            return final
        stage = min(alphas, key=lambda k: (abs(alphas[k] - slider.value), k))
        if stage not in stages:
            stages[stage] = load_stage(model, checkpoint_dir, stage)
        caption.value = f"weights after stage {stage} (trained to alpha {alphas[stage]:.2f})"
        return stages[stage]

    def redraw(_change=None):
        index = chooser.value
        original.value = to_png(images[index], scale)
        shown = outputs_at_alpha(weights(), images[index:index + 1], slider.value)[0]
        reconstruction.value = to_png(shown, scale)

    for control in (slider, chooser, mode):
        control.observe(redraw, names="value")
    redraw()
    titles = widgets.HBox([widgets.Label("original", layout=widgets.Layout(width=f"{images.shape[-1] * scale}px")),
                           widgets.Label("reconstruction at the slider's alpha")])
    box = widgets.VBox([widgets.HBox([slider, chooser]), mode, caption, titles,
                        widgets.HBox([original, reconstruction])])
    box.slider, box.chooser, box.mode, box.original, box.reconstruction = slider, chooser, mode, original, reconstruction
    box.caption = caption
    return box
