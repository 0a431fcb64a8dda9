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


def test_the_skip_autoencoder_has_the_plain_ones_layers_and_adds_two_skips():
    plain, skips = models.RGBAutoencoder(width=0.125), models.SkipAutoencoder(width=0.125)
    skips.load_state_dict(plain.state_dict())  # the same layers, so a state_dict moves between them
    x = torch.rand(2, 3, 128, 128)
    assert skips(x).shape == x.shape and not torch.allclose(skips(x), plain(x))
    with torch.no_grad():  # with the BatchNorms before the skips at zero, the skips add zeros
        for index in models.SkipAutoencoder.SKIPS.values():
            skips.encoder[index - 1].weight.zero_()
            skips.encoder[index - 1].bias.zero_()
    plain.load_state_dict(skips.state_dict())
    assert torch.allclose(skips.eval()(x), plain.eval()(x))


def test_the_cifar_resnet_has_he_et_als_sizes_and_refuses_other_depths():
    model = models.resnet_cifar(20)
    assert sum(p.numel() for p in model.parameters()) == 272_474
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(model.stage2[0].shortcut[0], nn.Conv2d) and len(model.stage1[0].shortcut) == 0
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.resnet_cifar(21)
