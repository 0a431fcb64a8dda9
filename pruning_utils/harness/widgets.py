"""Interactive exploration in JupyterLab: an alpha slider that redraws a branched model's reconstruction."""
from __future__ import annotations

import copy
import io

import numpy as np
import torch
from torch import nn

from ..method.pipeline import outputs_at_alpha


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


def alpha_explorer(model: nn.Module, images: torch.Tensor, labels: list[str] | None = None, alpha: float = 0.0,
                   step: float = 0.05, scale: int = 2):
    """A widget: a slider over alpha and a choice of image, redrawing the mixed model's reconstruction live.

    ``images``: N x 3 x H x W in [0, 1]. The widget works on a copy of ``model``. Returns an
    ``ipywidgets.VBox`` with attributes ``slider``, ``chooser``, ``original`` and ``reconstruction``.
    """
    import ipywidgets as widgets

    mixed = copy.deepcopy(model)
    labels = labels or [f"image {i}" for i in range(len(images))]
    slider = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=step, description="alpha",
                                 continuous_update=True, readout_format=".2f")
    chooser = widgets.Dropdown(options=[(label, i) for i, label in enumerate(labels)], value=0, description="image")
    original = widgets.Image(format="png")
    reconstruction = widgets.Image(format="png")

    def redraw(_change=None):
        index = chooser.value
        original.value = to_png(images[index], scale)
        reconstruction.value = to_png(outputs_at_alpha(mixed, images[index:index + 1], slider.value)[0], scale)

    slider.observe(redraw, names="value")
    chooser.observe(redraw, names="value")
    redraw()
    titles = widgets.HBox([widgets.Label("original", layout=widgets.Layout(width=f"{images.shape[-1] * scale}px")),
                           widgets.Label("reconstruction at the slider's alpha")])
    box = widgets.VBox([widgets.HBox([slider, chooser]), titles, widgets.HBox([original, reconstruction])])
    box.slider, box.chooser, box.original, box.reconstruction = slider, chooser, original, reconstruction
    return box
