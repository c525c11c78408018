"""Compiled CPU kernels where PyTorch leaves most of the CPU idle (`cpu_ops.cpp` says
why), behind functions that fall back to PyTorch:

- `conv5x5(x, weight, bias)`: a 5x5 convolution (stride 1, no padding) with up to 6 input
  channels: LeNet-5's two. Its weight gradient always, and its forward pass where output
  rows are 1 to 4 vectors long (the first layer: 28 outputs a row), through the kernels;
  its input gradient through PyTorch's. Output in the default (NCHW) layout. At two threads
  the first layer's forward runs about 3x and its weight gradient 2.5x faster than oneDNN's.
- `max_pool2x2(x)`: 2x2 max pooling of NCHW maps, the same values, indices and gradients as
  F.max_pool2d to the bit (ATen's own loop on this layout is scalar: 1.5 ms of a 7 ms step).
- `augment_normalize(images, index, augmentation, scale, shift)`: a training batch cropped,
  flipped and normalised in one pass, the same values as data.apply_augmentation and
  data.normalize to the bit.

Each returns None where it does not apply (another device, dtype, shape or layout, a traced
or FLOP-counted model, or no kernel): the caller then runs PyTorch's layer.
The convolution sums in another order than oneDNN, so its results differ from PyTorch's in
the last bits (about 1e-6 relative); they do not depend on the thread count.

The kernels are compiled once per machine on first use (about 25 s, g++ and ninja) for the
CPU's vector width, and cached by torch.utils.cpp_extension. DLBOOK_NO_KERNEL=1, a CPU
without AVX2 or a failed build (a warning says why) leave every layer to PyTorch.
"""
import functools
import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

NO_KERNEL_ENV = "DLBOOK_NO_KERNEL"  # "1": PyTorch's layers everywhere
_SOURCE = Path(__file__).with_name("cpu_ops.cpp")
_AVX512 = ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mprefer-vector-width=512"]


@functools.cache
def kernels():
    """The compiled module, or None where it cannot be used."""
    capability = torch.backends.cpu.get_cpu_capability()
    if os.environ.get(NO_KERNEL_ENV) == "1" or capability not in ("AVX2", "AVX512"):
        return None
    try:
        # Importing it looks for CUDA and, on a machine with a CUDA toolkit but no GPU,
        # warns that it found none: nothing these CPU kernels need.
        quiet = logging.getLogger("torch.utils.cpp_extension")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            from torch.utils.cpp_extension import load
        finally:
            quiet.setLevel(level)
        # One build per instruction set: a cache shared by two kinds of CPU keeps both.
        return load(f"dlbook_cpu_ops_{capability.lower()}", [str(_SOURCE)],
                    extra_cflags=["-O3", "-ffp-contract=off", "-mavx2", "-mfma", "-fopenmp"]
                    + (_AVX512 if capability == "AVX512" else []),
                    extra_ldflags=["-fopenmp"])
    except Exception as e:  # no compiler, no ninja, no write access: still correct
        warnings.warn(f"could not build the CPU kernels ({type(e).__name__}: {e}); "
                      "using PyTorch's layers (slower)", stacklevel=2)
        return None


def _plain_cpu_float(x: torch.Tensor) -> bool:
    """A float32 CPU tensor of images, outside a trace or a dispatch mode: fvcore's tracer
    and PyTorch's FlopCounterMode must see PyTorch's layers, which they can count."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and not torch.jit.is_tracing() and _get_current_dispatch_mode() is None)


class _Conv5x5(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ops = kernels()
        # The weight gradient reads channels_last images, the forward kernel NCHW ones.
        ctx.save_for_backward(x, x.contiguous(memory_format=torch.channels_last), weight)
        if ops.conv5x5_supports(x.shape[3]):
            return ops.conv5x5_forward(x.contiguous(), weight.contiguous(), bias)
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, x_cl, weight = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        dw, db = kernels().conv5x5_weight_grad(x_cl, grad.contiguous())
        return dx, dw, db


def conv5x5(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """F.conv2d(x, weight, bias) with its weight gradient (and, where its rows suit it, its
    forward pass) through the compiled kernels, or None where they do not apply."""
    ops = kernels()
    if (ops is None or not _plain_cpu_float(x) or bias is None
            or tuple(weight.shape[2:]) != (5, 5) or weight.shape[1] != x.shape[1]
            or weight.dtype != torch.float32 or min(x.shape[2:]) < 5
            or not ops.weight_grad_supports(x.shape[1])):
        return None
    return _Conv5x5.apply(x, weight, bias)


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out, index = kernels().max_pool2x2(x)
        ctx.save_for_backward(x, index)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, index = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, index)


def max_pool2x2(x: torch.Tensor):
    """F.max_pool2d(x, 2) of NCHW maps through the compiled kernel, or None where it does
    not apply."""
    if (kernels() is None or not _plain_cpu_float(x) or not x.is_contiguous()
            or x.shape[2] % 2 or x.shape[3] % 2):
        return None
    return _MaxPool2x2.apply(x)


def augment_normalize(images: torch.Tensor, index: torch.Tensor, augmentation,
                      scale: torch.Tensor, shift: torch.Tensor):
    """The normalised (shift + pixel * scale) float32 NCHW batch of uint8 channels_last
    `images[index]`, cropped and flipped as `augmentation` (a data.Augmentation, or None)
    says: data.apply_augmentation then data.normalize in one pass, the same values to the
    bit; or None where the kernel does not apply."""
    if (kernels() is None or images.device.type != "cpu" or images.dtype != torch.uint8
            or images.dim() != 4 or not images.is_contiguous(memory_format=torch.channels_last)):
        return None
    n = len(index)
    none = torch.zeros(n, dtype=torch.bool)
    padding, top, left, flip, vflip = augmentation or (0, torch.zeros(n, dtype=torch.int64),
                                                       torch.zeros(n, dtype=torch.int64),
                                                       None, None)
    return kernels().augment_normalize(
        images, index, top, left, none if flip is None else flip,
        none if vflip is None else vflip, padding, scale.float(), shift.float())

