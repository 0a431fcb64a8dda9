"""The seeds' two models, built only of plain torch.nn layers so pruning can read them as chains of units."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
CLASSIFIERS = ("linear", "mlp")


def scaled(channels: int, width: float) -> int:
    """Channels after scaling by ``width``, at least 1."""
    return max(1, int(round(channels * width)))


def _check_width(width: float) -> None:
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")


class VGG16(nn.Sequential):
    """CIFAR-style VGG16 with BatchNorm: ``features`` (13 conv-BN-ReLU, 5 max-pools), ``flatten``, ``classifier``.

    A plain ``nn.Sequential`` subclass: its forward is the chain of its children.
    """


def vgg16(num_classes: int = 10, width: float = 1.0, classifier: str = "linear", in_channels: int = 3,
          dropout: float = 0.5) -> VGG16:
    """VGG16-BN for 32x32 inputs. ``width`` scales every hidden layer (1.0: 14.7 M conv parameters).

    ``classifier="linear"``: one linear layer on the 1x1 feature map; ``"mlp"``: the three-layer
    block with ReLU and dropout (seed 004's variant).
    """
    _check_width(width)
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = scaled(item, width)
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    if classifier == "linear":
        head = nn.Sequential(nn.Linear(channels, num_classes))
    else:
        hidden = scaled(512, width)
        head = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                             nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                             nn.Linear(hidden, num_classes))
    model = VGG16(OrderedDict(features=nn.Sequential(*layers), flatten=nn.Flatten(), classifier=head))
    init_weights(model)
    return model


class RGBAutoencoder(nn.Sequential):
    """Convolutional autoencoder: 3x128x128 -> bottleneck x 16x16 -> 3x128x128, outputs in [0, 1].

    Encoder: three stages of two 3x3 convolutions (the second with stride 2), BatchNorm and ReLU,
    then a 3x3 bottleneck convolution with ReLU. Decoder: three stride-2 ConvTranspose2d stages
    with BatchNorm and ReLU, then a 3x3 ConvTranspose2d to RGB with a sigmoid. ``width`` scales
    the hidden layers; the bottleneck's channel count is ``bottleneck``.
    """

    def __init__(self, width: float = 1.0, bottleneck: int = 128):
        _check_width(width)
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be at least 1, got {bottleneck}")
        c1, c2, c3 = (scaled(c, width) for c in (64, 128, 256))
        encoder: list[nn.Module] = []
        channels = 3
        for out in (c1, c2, c3):
            encoder += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                        nn.Conv2d(out, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        encoder += [nn.Conv2d(channels, bottleneck, 3, padding=1), nn.ReLU(inplace=True)]
        decoder: list[nn.Module] = []
        channels = bottleneck
        for out in (c3, c2, c1):
            decoder += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), nn.BatchNorm2d(out),
                        nn.ReLU(inplace=True)]
            channels = out
        decoder += [nn.ConvTranspose2d(channels, 3, 3, padding=1), nn.Sigmoid()]
        super().__init__(OrderedDict(encoder=nn.Sequential(*encoder), decoder=nn.Sequential(*decoder)))
        init_weights(self)


def init_weights(model: nn.Module) -> None:
    """The models' initialisation: He (fan-out) for convolutions, N(0, 0.01) for linear layers, BatchNorm at 1 and 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


