import pytest
import torch
from torch import nn

from pruning_utils.engine import models


def test_vgg16_width_one_has_14_7_million_conv_parameters():
    model = models.vgg16()
    conv = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    assert abs(conv - 14.7e6) < 0.05e6
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


@pytest.mark.parametrize("classifier,linears", [("linear", 1), ("mlp", 3)])
def test_vgg16_output_and_classifier(classifier, linears):
    model = models.vgg16(num_classes=7, width=0.125, classifier=classifier)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert sum(isinstance(m, nn.Linear) for m in model.classifier) == linears


def test_width_scales_every_hidden_layer():
    widths = [m.out_channels for m in models.vgg16(width=0.25).modules() if isinstance(m, nn.Conv2d)]
    assert widths[0] == 16 and widths[-1] == 128


def test_autoencoder_shapes():
    model = models.RGBAutoencoder(width=0.25).eval()
    x = torch.rand(2, 3, 128, 128)
    z = model.encoder(x)
    assert z.shape == (2, 128, 16, 16)
    y = model(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.decoder)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="width"):
        models.vgg16(width=0)
    with pytest.raises(ValueError, match="classifier"):
        models.vgg16(classifier="big")
    with pytest.raises(ValueError, match="bottleneck"):
        models.RGBAutoencoder(bottleneck=0)
