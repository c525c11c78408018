"""The models the book trains or analyses.

- `LeNet5`: the course's LeNet-5 (62,006 parameters) with the options the
  questions vary: activation, batch norm (optionally "noisy", with `ShiftingNoise`
  after it), dropout, weight init.
- `ResNet20`: He et al. (2016) CIFAR ResNet-20 (3 stages x 3 basic blocks,
  16/32/64 channels, parameter-free "option A" shortcuts), its plain twin
  (`shortcuts=False`), and a depthwise-separable variant (`separable=True`); with one
  block per stage ResNet-8 and plain-8, with nine ResNet-56 and plain-56.
- torchvision's SqueezeNet 1.0 and AlexNet, untrained, by name.

`build_model(name, **options)` is the one entry point the rest of the code uses.
"""
import torch
import torch.nn.functional as F
from torch import nn

from analysis import cpu_ops

ACTIVATIONS = ("relu", "leaky_relu", "swish")
# relu(max(a, b)) == max(relu(a), relu(b)), gradients included, to the bit. Not leaky ReLU:
# its 0.01 * x rounds, two different negative values can round to one, and pooling after it
# then picks another of them (LeNet-5 runs drifted from the course order within an epoch).
POOL_FIRST = ("relu",)
INITS = ("default", "kaiming_normal", "xavier_normal")


class Swish(nn.Module):
    """x * sigmoid(x) (Ramachandran et al. 2017, beta = 1); written out, not nn.SiLU."""

    def forward(self, x):
        return x * torch.sigmoid(x)


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "swish":
        return Swish()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class ShiftingNoise(nn.Module):
    """Santurkar et al.'s (2018) "noisy batch norm", the part after the BN layer: while
    training, every channel is scaled by a ~ U(1, 1 + strength) and shifted by
    b ~ U(-strength, strength), drawn afresh at every step, so that the next layer's input
    distribution moves from step to step (internal covariate shift put back) however well
    batch norm normalised it. In eval mode it applies the noise's expectation (scale
    1 + strength / 2, no shift), as dropout does: the next layers were trained on, and their
    BN statistics gathered from, activations scaled by that much on average; evaluating
    without any scale breaks the network (LeNet-5 at strength 1 dropped from about 48% of
    its training images in training mode to 26% in eval mode)."""

    def __init__(self, strength: float):
        super().__init__()
        self.strength = strength

    def forward(self, x):
        if self.strength == 0:
            return x
        if not self.training:
            return x * (1 + self.strength / 2)
        shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
        scale = 1 + self.strength * torch.rand(shape, device=x.device, dtype=x.dtype)
        shift = self.strength * (2 * torch.rand(shape, device=x.device, dtype=x.dtype) - 1)
        return x * scale + shift


class MaxPool2x2(nn.MaxPool2d):
    """nn.MaxPool2d(2), the same function to the bit, values and gradients; NCHW float32
    maps on the CPU go through a compiled kernel (`cpu_ops.max_pool2x2`)."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x):
        out = cpu_ops.max_pool2x2(x)
        return super().forward(x) if out is None else out


class Conv5x5(nn.Conv2d):
    """nn.Conv2d(c_in, c_out, 5); on the CPU, with up to 6 input channels (LeNet-5's two
    layers), its weight gradient and, where its rows suit it (the first layer), its forward
    pass through compiled kernels (`cpu_ops.conv5x5`), whose sums differ from PyTorch's in
    the last bits."""

    def __init__(self, c_in, c_out):
        super().__init__(c_in, c_out, 5)

    def forward(self, x):
        out = cpu_ops.conv5x5(x, self.weight, self.bias)
        return super().forward(x) if out is None else out


class LeNet5(nn.Module):
    """conv 3->6 5x5, act, pool 2; conv 6->16 5x5, act, pool 2; fc 400-120-84-10.

    Without batch norm, ReLU runs after the pooling instead: the same function, with the
    same gradients, for less work (`POOL_FIRST`).

    With `batch_norm`, a BN layer follows every conv/fc except the last (before
    the activation), and with `bn_noise > 0` a `ShiftingNoise` follows each BN layer.
    With `dropout > 0`, dropout follows the two hidden fc layers.
    """
    # Its CPU kernels work on NCHW maps; channels_last weights would turn the second conv's
    # output, and everything after it, channels_last.
    memory_format = torch.contiguous_format

    def __init__(self, activation="relu", batch_norm=False, dropout=0.0, init="default",
                 bn_noise=0.0):
        super().__init__()
        if bn_noise and not batch_norm:
            raise ValueError("bn_noise needs batch_norm=True: the noise follows each BN layer")

        def norm(n, dims):
            if not batch_norm:
                return nn.Identity()
            bn = nn.BatchNorm2d(n) if dims == 2 else nn.BatchNorm1d(n)
            return nn.Sequential(bn, ShiftingNoise(bn_noise)) if bn_noise else bn

        act = lambda: make_activation(activation)  # noqa: E731

        def act_and_pool():
            # ReLU and max pooling commute (`POOL_FIRST`), so ReLU can run on the pooled map,
            # a quarter of the values. Not after batch norm: `probes.batchnorm_stats` reads
            # the activation that follows it.
            if activation in POOL_FIRST and not batch_norm:
                return [MaxPool2x2(), act()]
            return [act(), MaxPool2x2()]

        self.features = nn.Sequential(
            Conv5x5(3, 6), norm(6, 2), *act_and_pool(),
            Conv5x5(6, 16), norm(16, 2), *act_and_pool(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(400, 120), norm(120, 1), act(), nn.Dropout(dropout),
            nn.Linear(120, 84), norm(84, 1), act(), nn.Dropout(dropout),
            nn.Linear(84, 10),
        )
        init_weights(self, init)

    def forward(self, x):
        return self.classifier(self.features(x))


def init_weights(model: nn.Module, init: str) -> None:
    """Re-initialise every hidden conv/linear weight (biases to zero); 'default' keeps PyTorch's.

    The output layer keeps PyTorch's default, as torchvision's ResNets do: He's gain of
    sqrt(2) is derived for a layer followed by ReLU, and on the logits it would make the
    untrained network confidently wrong, so a comparison of schemes would measure that
    instead of what the schemes do to the hidden layers.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "default":
        return
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers[:-1]:
        if init == "kaiming_normal":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        else:
            nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def conv3x3(cin, cout, stride=1, separable=False) -> nn.Module:
    """A bias-free 3x3 conv, or its depthwise-separable replacement (3x3 depthwise + 1x1)."""
    if not separable:
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut=True, separable=False):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride, separable)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout, 1, separable)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = shortcut
        self.downsample = stride != 1 or cin != cout
        self.extra_channels = cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            # Option A: subsample and zero-pad channels, no parameters.
            identity = x
            if self.downsample:
                identity = x[:, :, ::2, ::2]
                pad = self.extra_channels // 2
                identity = F.pad(identity, (0, 0, 0, 0, pad, self.extra_channels - pad))
            out = out + identity
        return F.relu(out)


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (269,722 parameters); plain-20 with `shortcuts=False`; ResNet-56
    (853,018 parameters) and plain-56 with `blocks_per_stage=9`; ResNet-8 (75,290) and
    plain-8 with `blocks_per_stage=1`."""

    def __init__(self, num_classes=10, shortcuts=True, separable=False, blocks_per_stage=3):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(3, 16, 1, separable), nn.BatchNorm2d(16), nn.ReLU())
        stages, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride, shortcuts, separable))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stem(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.head(x)


MODELS = ("lenet5", "resnet8", "plain8", "resnet20", "plain20", "resnet56", "plain56",
          "resnet20_separable", "squeezenet1_0", "alexnet")
# CIFAR ResNets have 6n + 2 layers, n blocks per stage: depth -> n.
BLOCKS_PER_STAGE = {8: 1, 20: 3, 56: 9}


def build_model(name: str, **options) -> nn.Module:
    """Build a model by name. LeNet-5 options: activation, batch_norm, dropout, init,
    bn_noise."""
    if name == "lenet5":
        return LeNet5(**options)
    # Li et al. (2018) contrast ResNet-56 with its plain twin (the difference grows with
    # depth); He et al.'s degradation is a deeper plain net training worse than a shallower.
    if name in ("resnet8", "plain8", "resnet20", "plain20", "resnet56", "plain56",
                "resnet20_separable"):
        depth = int(name.removesuffix("_separable").removeprefix("resnet").removeprefix("plain"))
        return ResNet20(shortcuts=not name.startswith("plain"),
                        separable=name == "resnet20_separable",
                        blocks_per_stage=BLOCKS_PER_STAGE[depth], **options)
    if name in ("squeezenet1_0", "alexnet"):
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **options)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def memory_format(model: nn.Module) -> torch.memory_format:
    """The layout the engine keeps a model's weights and inputs in: channels_last (oneDNN's
    and cuDNN's faster one) unless the model says otherwise (LeNet-5's CPU kernels)."""
    return getattr(model, "memory_format", torch.channels_last)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
