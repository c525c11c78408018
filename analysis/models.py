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
import functools
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

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


# 2x2 max pooling, stride 2, of a channels_last float32 CPU tensor, with the indices
# max_pool2d_with_indices gives (each maximum's h * W + w in its plane, the first maximum
# row by row), so that ATen's backward applies. ATen's own channels_last kernel vectorises
# over channels only, and below 16 of them runs a scalar loop: LeNet-5's first pooling
# (6 channels) took 0.72 ms of a 7 ms training step at two threads. The loops here run along
# whole image rows, so they vectorise, and over rows in PyTorch's threads (at::parallel_for:
# the extension uses the libgomp that torch loaded).
_POOL_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

// Output row i of one image, from input rows `top` and `bottom` (w * c floats each).
// Returns whether a NaN was seen (the caller then leaves the batch to ATen).
static bool pool_row(const float* top, const float* bottom, float* out, int64_t* index,
                     int64_t w, int64_t c, int64_t i, float* col, int64_t* low,
                     float* pair, int64_t* offset) {
  const int64_t n = w * c;
  int64_t nan = 0;
  for (int64_t t = 0; t < n; ++t) {  // each column of the two rows: the lower value if larger
    const float a = top[t], b = bottom[t];
    const int64_t lower = b > a;
    col[t] = lower ? b : a;
    low[t] = lower;
    nan |= (a != a) | (b != b);
  }
  for (int64_t t = 0; t + c < n; ++t) {  // each column against the next pixel's
    const float l = col[t], r = col[t + c];
    const int64_t lb = low[t], rb = low[t + c];
    // Row by row, (0, 1) comes before (1, 0): on a tie the right column wins only with
    // its maximum in the top row and the left one's in the bottom row.
    const int64_t right = (r > l) | ((r == l) & lb & (rb ^ 1));
    pair[t] = right ? r : l;
    offset[t] = right + w * (right ? rb : lb);
  }
  for (int64_t j = 0; j < w / 2; ++j) {  // the windows: pairs starting at even pixels
    std::memcpy(out + j * c, pair + 2 * j * c, c * sizeof(float));
    for (int64_t k = 0; k < c; ++k) index[j * c + k] = 2 * i * w + 2 * j + offset[2 * j * c + k];
  }
  return nan;
}

std::vector<torch::Tensor> max_pool2x2(torch::Tensor x) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous(cl));
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t oh = h / 2, ow = w / 2;
  auto out = torch::empty({n, c, oh, ow}, x.options().memory_format(cl));
  auto index = torch::empty({n, c, oh, ow}, x.options().dtype(torch::kLong).memory_format(cl));
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  int64_t* ix = index.data_ptr<int64_t>();
  std::atomic<bool> nan{false};
  at::parallel_for(0, n * oh, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> col(w * c), pair(w * c);
    std::vector<int64_t> low(w * c), offset(w * c);
    bool seen = false;
    for (int64_t r = begin; r < end; ++r) {  // output row r: image r / oh, row r % oh
      const float* top = in + ((r / oh) * h + 2 * (r % oh)) * w * c;
      seen |= pool_row(top, top + w * c, o + r * ow * c, ix + r * ow * c, w, c, r % oh,
                       col.data(), low.data(), pair.data(), offset.data());
    }
    if (seen) nan = true;
  });
  if (nan) {  // which NaN ATen reports is its own rule: let it decide
    auto both = at::max_pool2d_with_indices(x, {2, 2}, {2, 2});
    return {std::get<0>(both), std::get<1>(both)};
  }
  return {out, index};
}
"""
NO_KERNEL_ENV = "DLBOOK_NO_KERNEL"  # "1": PyTorch's max_pool2d everywhere


@functools.cache
def _pool_kernel():
    """The compiled pooling loop (built once per machine, about 20 s, then cached by
    torch.utils.cpp_extension), or None where it cannot be built: then PyTorch's
    max_pool2d runs, with the same results, more slowly."""
    if (os.environ.get(NO_KERNEL_ENV) == "1"
            or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512")):
        return None
    try:
        from torch.utils.cpp_extension import load_inline
        return load_inline("dlbook_max_pool2x2", cpp_sources=_POOL_SOURCE,
                           functions=["max_pool2x2"],
                           extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
                           extra_ldflags=["-fopenmp"])
    except Exception as e:  # no compiler, no ninja, no write access: still correct
        warnings.warn(f"could not build the fast pooling kernel ({type(e).__name__}: {e}); "
                      "using PyTorch's max_pool2d (same results, slower)", stacklevel=2)
        return None


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out, index = _pool_kernel().max_pool2x2(x)
        ctx.save_for_backward(x, index)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, index = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, index)


class MaxPool2x2(nn.MaxPool2d):
    """nn.MaxPool2d(2), the same function to the bit, values and gradients; channels_last
    float32 input on the CPU goes through a compiled loop (`_POOL_SOURCE`), anything else
    through PyTorch's."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x):
        fast = (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.jit.is_tracing())
        if fast and _pool_kernel() is not None:
            return _MaxPool2x2.apply(x)
        return super().forward(x)


class LeNet5(nn.Module):
    """conv 3->6 5x5, act, pool 2; conv 6->16 5x5, act, pool 2; fc 400-120-84-10.

    Without batch norm, ReLU runs after the pooling instead: the same function, with the
    same gradients, for less work (`POOL_FIRST`).

    With `batch_norm`, a BN layer follows every conv/fc except the last (before
    the activation), and with `bn_noise > 0` a `ShiftingNoise` follows each BN layer.
    With `dropout > 0`, dropout follows the two hidden fc layers.
    """

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
            nn.Conv2d(3, 6, 5), norm(6, 2), *act_and_pool(),
            nn.Conv2d(6, 16, 5), norm(16, 2), *act_and_pool(),
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


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
