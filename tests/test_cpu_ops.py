"""The compiled CPU kernels (`analysis.cpu_ops`): LeNet-5's 5x5 convolutions against
PyTorch's to float tolerance, their sums independent of the thread count, the augmented
batch equal to the tensor operations' to the bit, and PyTorch's layers wherever a kernel
does not apply. (Max pooling: tests/test_models.py.)"""
import shutil

import pytest
import torch
import torch.nn.functional as F

from analysis import cpu_ops, data, models

CAN_BUILD = (shutil.which("g++") is not None and shutil.which("ninja") is not None
             and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))
needs_kernels = pytest.mark.skipif(
    not CAN_BUILD, reason="the CPU kernels need g++, ninja and an AVX2 CPU; "
                          "without them PyTorch's layers run (tested below)")


@needs_kernels
def test_the_kernels_are_built_where_they_can_be():
    assert cpu_ops.kernels() is not None


# (batch, input channels, output channels, height, width): LeNet-5's two layers (the second
# with PyTorch's forward, the kernel's weight gradient), other sizes and odd widths.
SHAPES = [(16, 3, 6, 32, 32), (16, 6, 16, 14, 14), (5, 3, 4, 21, 37), (3, 1, 5, 9, 30),
          (9, 2, 7, 30, 20)]


def assert_accurate(mine, exact, theirs):
    """`mine` within float32 rounding of the float64 result: at most 1e-5 of its largest
    magnitude off anywhere, and never much further off than PyTorch's float32 result."""
    scale = exact.abs().max().item()
    error = (mine.double() - exact).abs().max().item()
    their_error = (theirs.double() - exact).abs().max().item()
    assert error <= 1e-5 * scale and error <= 4 * their_error + 1e-7 * scale, (error, their_error)


@needs_kernels
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("input_grad", [False, True])
def test_conv5x5_computes_what_conv2d_does(shape, layout, input_grad):
    n, c_in, c_out, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(n, c_in, h, w, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, 5, 5, generator=g)
    bias = torch.randn(c_out, generator=g)
    grad = torch.randn(n, c_out, h - 4, w - 4, generator=g)

    def run(conv, dtype):
        xs, ws, bs = (t.to(dtype, copy=True).requires_grad_(r)
                      for t, r in ((x, input_grad), (weight, True), (bias, True)))
        out = conv(xs, ws, bs)
        out.backward(grad.to(dtype))
        return out, ws.grad, bs.grad, xs.grad

    mine, theirs, exact = run(cpu_ops.conv5x5, torch.float32), run(F.conv2d, torch.float32), \
        run(F.conv2d, torch.float64)
    assert mine[0].shape == exact[0].shape and mine[0].dtype == torch.float32
    for m, t, e in zip(mine[:3], theirs[:3], exact[:3], strict=True):  # output, weight, bias
        assert_accurate(m, e, t)
    if input_grad:
        assert_accurate(mine[3], exact[3], theirs[3])
    else:
        assert mine[3] is None


@needs_kernels
def test_conv5x5_sums_the_same_whatever_the_thread_count():
    """A run's numbers must not depend on how many threads the runner gave it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 3, 32, 32, generator=g)
    weight = torch.randn(6, 3, 5, 5, generator=g, requires_grad=True)
    bias = torch.randn(6, generator=g, requires_grad=True)
    grad = torch.randn(37, 6, 28, 28, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            weight.grad = bias.grad = None
            out = cpu_ops.conv5x5(x, weight, bias)
            out.backward(grad)
            results.append((out, weight.grad, bias.grad))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


@needs_kernels
def test_conv5x5_propagates_nan_and_inf():
    x = torch.randn(2, 3, 32, 32)
    x[0, 1, 10, 10] = float("nan")
    x[1, 2, 20, 3] = float("inf")
    weight, bias = torch.randn(6, 3, 5, 5), torch.randn(6)
    out, expected = cpu_ops.conv5x5(x, weight, bias), F.conv2d(x, weight, bias)
    assert torch.equal(out.isnan(), expected.isnan()) and torch.equal(out.isinf(), expected.isinf())


def test_pytorchs_layers_run_where_no_kernel_applies(monkeypatch):
    x = torch.randn(2, 3, 32, 32)
    weight, bias = torch.randn(6, 3, 5, 5), torch.randn(6)
    assert cpu_ops.conv5x5(x.double(), weight.double(), bias.double()) is None
    assert cpu_ops.conv5x5(x, torch.randn(6, 3, 3, 3), bias) is None  # not 5x5
    assert cpu_ops.conv5x5(x, weight, None) is None
    assert cpu_ops.conv5x5(torch.randn(2, 16, 32, 32), torch.randn(6, 16, 5, 5), bias) is None
    assert cpu_ops.max_pool2x2(x.contiguous(memory_format=torch.channels_last)) is None
    assert cpu_ops.max_pool2x2(torch.randn(2, 3, 7, 8)) is None  # odd height
    traced = torch.jit.trace(models.Conv5x5(3, 6), x)  # fvcore traces: PyTorch's layers only
    assert "aten::_convolution" in str(traced.graph)

    monkeypatch.setattr(cpu_ops, "kernels", lambda: None)  # no compiler, or DLBOOK_NO_KERNEL=1
    assert cpu_ops.conv5x5(x, weight, bias) is None and cpu_ops.max_pool2x2(x) is None
    assert cpu_ops.augment_normalize(
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.arange(2), None,
        *data.normalization(torch.zeros(3), torch.ones(3))) is None
    conv = models.Conv5x5(3, 6)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias), rtol=0, atol=0)


def test_no_kernel_env_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv(cpu_ops.NO_KERNEL_ENV, "1")
    cpu_ops.kernels.cache_clear()
    try:
        assert cpu_ops.kernels() is None
    finally:
        monkeypatch.delenv(cpu_ops.NO_KERNEL_ENV)
        cpu_ops.kernels.cache_clear()


@needs_kernels
def test_lenet_uses_the_kernels_on_the_cpu(monkeypatch):
    model = models.LeNet5()
    used = []
    real = cpu_ops.kernels()

    class Recorder:
        def __getattr__(self, name):
            used.append(name)
            return getattr(real, name)

    monkeypatch.setattr(cpu_ops, "kernels", lambda: Recorder())
    x = torch.randn(4, 3, 32, 32)
    F.cross_entropy(model(x), torch.arange(4)).backward()
    assert {"conv5x5_forward", "conv5x5_weight_grad", "max_pool2x2"} <= set(used)


AUGMENTATIONS = [{}, {"crop_padding": 4, "flip_p": 0.5}, {"flip_p": 1.0}, {"vflip_p": 0.5},
                 {"crop_padding": 4, "flip_p": 0.5, "vflip_p": 0.5}, {"crop_padding": 40,
                                                                      "flip_p": 0.5}]


@needs_kernels
@pytest.mark.parametrize("options", AUGMENTATIONS, ids=str)
def test_the_batch_kernel_equals_augment_then_normalize_to_the_bit(options):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=g)
    images = data.channels_last(images)
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    for seed in range(4):
        index = torch.randint(0, 20, (17,), generator=g)
        a = data.draw_augmentation(17, generator=torch.Generator().manual_seed(seed),
                                   device="cpu", **options)
        mine = cpu_ops.augment_normalize(images, index, a, *data.normalization(mean, std))
        expected = data.augment(data.take(images, index), generator=torch.Generator()
                                .manual_seed(seed), **options)
        expected = data.normalize(expected, mean, std)
        assert mine.is_contiguous() and torch.equal(mine, expected)


@needs_kernels
def test_the_batch_kernel_rejects_bad_indices():
    images = data.channels_last(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="index out of range"):
        cpu_ops.augment_normalize(images, torch.tensor([0, 4]), None,
                                  *data.normalization(torch.zeros(3), torch.ones(3)))
