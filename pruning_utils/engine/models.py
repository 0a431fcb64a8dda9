"""The seeds' two models, built only of plain torch.nn layers so pruning can read them as chains of units, the
CIFAR ResNet the field benchmarks structured pruning on (residual additions: read as a graph), and the DCGAN of the
seeds' future work."""
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


class SkipAutoencoder(RGBAutoencoder):
    """:class:`RGBAutoencoder` with additive skips from the encoder to the decoder at 32x32 and 64x64.

    The output of the encoder's first convolution block of stages 2 and 3 (C2 channels at 64x64, C3 at 32x32) is
    added to the decoder's output of the same size. Addition, not concatenation: the layers and their parameters
    are exactly those of the skip-less autoencoder (so the two compare at equal parameters, and a state_dict moves
    between them), and the coupled channels are pruned together (shared selections). No skip at 128x128: it would
    hand the input's own resolution to the last layers and leave the bottleneck nothing to do.
    """

    SKIPS = {2: 14, 5: 8}  # decoder layer index -> the encoder layer index whose output is added after it

    def forward(self, x):
        kept = {}
        for index, layer in enumerate(self.encoder):
            x = layer(x)
            if index in self.SKIPS.values():
                kept[index] = x
        for index, layer in enumerate(self.decoder):
            x = layer(x)
            if index in self.SKIPS:
                x = x + kept[self.SKIPS[index]]
        return x


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers (ReLU between) added to the input, or to a 1x1 conv-BN shortcut where the shape
    changes (He et al.'s option B), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


def resnet_cifar(depth: int = 20, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Sequential:
    """The CIFAR ResNet of He et al. (2016): a 3x3 stem, three stages of (depth - 2) / 6 basic blocks with 16, 32
    and 64 channels (times ``width``; strides 1, 2, 2), global average pooling and a linear layer.

    ResNet-20 at width 1: 0.27 M parameters, 41 M multiply-accumulates per 32x32 image.
    """
    _check_width(width)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
    blocks_per_stage = (depth - 2) // 6
    channels = scaled(16, width)
    layers = OrderedDict(stem=nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
                                            nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
    for stage, (out, stride) in enumerate(zip((scaled(c, width) for c in (16, 32, 64)), (1, 2, 2)), start=1):
        blocks = []
        for i in range(blocks_per_stage):
            blocks.append(BasicBlock(channels, out, stride if i == 0 else 1))
            channels = out
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
    layers.update(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes))
    model = nn.Sequential(layers)
    init_weights(model)
    return model


def dcgan_generator(latent_dim: int = 100, width: float = 1.0) -> nn.Sequential:
    """The DCGAN generator of Radford et al. (2016) for 32x32 RGB: a latent code (N x ``latent_dim`` x 1 x 1) through
    stride-2 ConvTranspose2d-BN-ReLU stages of 256, 128 and 64 channels (times ``width``) at 4x4, 8x8 and 16x16 to
    3x32x32.

    The last activation is a sigmoid, so images are on the [0, 1] pixel scale of the rest of the repository (the
    paper's tanh rescaled to [0, 1] is a sigmoid of twice its input: the same family of generators). A plain chain:
    the method branches its three hidden units. Width 1: 1.07 M parameters, 18 M multiply-accumulates per image.
    """
    _check_width(width)
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
    layers: list[nn.Module] = []
    channels = latent_dim
    for index, out in enumerate(scaled(c, width) for c in (256, 128, 64)):
        stride, padding = (1, 0) if index == 0 else (2, 1)
        layers += [nn.ConvTranspose2d(channels, out, 4, stride, padding, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True)]
        channels = out
    layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Sigmoid()]
    model = nn.Sequential(*layers)
    dcgan_init(model)
    return model


def dcgan_discriminator(width: float = 1.0) -> nn.Sequential:
    """The DCGAN discriminator for 3x32x32 images on [0, 1]: stride-2 Conv2d stages of 64, 128 and 256 channels
    (times ``width``; BatchNorm after all but the first, LeakyReLU 0.2) to 4x4, then a 4x4 convolution to one logit
    per image (N x 1)."""
    _check_width(width)
    layers: list[nn.Module] = []
    channels = 3
    for index, out in enumerate(scaled(c, width) for c in (64, 128, 256)):
        layers.append(nn.Conv2d(channels, out, 4, 2, 1, bias=False))
        if index:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        channels = out
    layers += [nn.Conv2d(channels, 1, 4, 1, 0, bias=False), nn.Flatten()]
    model = nn.Sequential(*layers)
    dcgan_init(model)
    return model


def dcgan_init(model: nn.Module) -> None:
    """DCGAN's initialisation: convolution weights N(0, 0.02), BatchNorm scales N(1, 0.02) and shifts 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


def init_weights(model: nn.Module) -> None:
    """The models' initialisation: He (fan-out) for convolutions, N(0, 0.01) for linear layers, BatchNorm at 1 and 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


