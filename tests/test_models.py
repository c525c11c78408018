import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import models
from analysis.models import LeNet5, Swish, build_model, count_params, make_activation


@pytest.mark.parametrize("name, expected", [
    ("lenet5", 62_006),
    ("resnet8", 75_290),  # one block per stage: 1 + 3 x 2 + 1 layers
    ("plain8", 75_290),
    ("resnet20", 269_722),  # He et al. (2016) option A; akamaster/pytorch_resnet_cifar10
    ("plain20", 269_722),   # shortcuts carry no parameters
    ("resnet56", 853_018),  # akamaster/pytorch_resnet_cifar10: 0.85M
    ("plain56", 853_018),
    ("squeezenet1_0", 1_248_424),
    ("alexnet", 61_100_840),
])
def test_parameter_counts(name, expected):
    assert count_params(build_model(name)) == expected


def test_batch_norm_adds_a_layer_after_every_conv_and_fc_but_the_last():
    model = LeNet5(batch_norm=True)
    norms = [m.num_features for m in model.modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert norms == [6, 16, 120, 84]
    assert count_params(model) == 62_006 + 2 * sum(norms)
    assert isinstance(model.classifier[-1], nn.Linear)


def test_dropout_follows_the_hidden_fc_layers():
    rates = [m.p for m in LeNet5(dropout=0.3).modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.3, 0.3]


@pytest.mark.parametrize("options", [
    {}, {"activation": "leaky_relu"}, {"activation": "swish", "batch_norm": True},
    {"dropout": 0.5, "init": "xavier_normal"},
])
def test_lenet_output_shape(options):
    assert LeNet5(**options)(torch.randn(4, 3, 32, 32)).shape == (4, 10)


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resnet20_separable"])
def test_resnet_output_shape(name):
    assert build_model(name)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_plain20_differs_from_resnet20_only_by_its_shortcuts():
    torch.manual_seed(0)
    resnet = build_model("resnet20").eval()
    plain = build_model("plain20").eval()
    plain.load_state_dict(resnet.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(resnet(x), plain(x))


def test_swish_matches_its_formula():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    assert torch.allclose(Swish()(x), x / (1 + torch.exp(-x)))
    assert Swish()(torch.tensor(0.0)) == 0


def test_activations_by_name():
    assert isinstance(make_activation("relu"), nn.ReLU)
    assert make_activation("leaky_relu").negative_slope == 0.01
    assert isinstance(make_activation("swish"), Swish)
    with pytest.raises(ValueError, match="relu"):
        make_activation("gelu")


def weight_std(model, index):
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[index].weight.std().item()


@pytest.mark.parametrize("init, std", [
    ("kaiming_normal", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("xavier_normal", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
])
def test_init_gives_the_specified_weight_std_and_zero_biases(init, std):
    torch.manual_seed(0)
    model = LeNet5(init=init)
    # fc 400 -> 120 (48,000 weights) and conv 6 -> 16 5x5 (fan_in 150, fan_out 400).
    assert weight_std(model, 2) == pytest.approx(std(400, 120), rel=0.03)
    assert weight_std(model, 1) == pytest.approx(std(150, 400), rel=0.06)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all((m.bias == 0).all() for m in layers[:-1])
    # The output layer (fc 84 -> 10) keeps PyTorch's default: uniform, std 1/sqrt(3 fan_in),
    # with a bias that is not zero.
    assert weight_std(model, -1) == pytest.approx(1 / math.sqrt(3 * 84), rel=0.15)
    assert (layers[-1].bias != 0).any()


def test_default_init_is_pytorchs():
    torch.manual_seed(0)
    model = LeNet5()
    # PyTorch's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), std = 1/sqrt(3 fan_in).
    assert weight_std(model, 2) == pytest.approx(1 / math.sqrt(3 * 400), rel=0.03)
    assert (model.classifier[1].bias != 0).any()


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="lenet5"):
        build_model("vgg16")


def test_noisy_batch_norm_moves_each_channel_while_training_and_its_mean_in_eval():
    from analysis.models import ShiftingNoise

    torch.manual_seed(0)
    noisy = build_model("lenet5", batch_norm=True, bn_noise=1.0)
    assert sum(isinstance(m, ShiftingNoise) for m in noisy.modules()) == 4  # after every BN
    assert count_params(noisy) == count_params(build_model("lenet5", batch_norm=True))
    noise = ShiftingNoise(1.0).train()
    x = torch.zeros(64, 3, 5, 5)
    a, b = noise(x), noise(x)
    # A shift per channel, the same over the batch and the positions, new at every call.
    assert torch.all(a == a[:1, :, :1, :1]) and not torch.equal(a, b)
    assert a.abs().max() <= 1
    ones = noise(torch.ones(64, 3, 5, 5))
    assert ones.min() >= 0  # scale in [1, 2], shift in [-1, 1]
    # Eval mode applies the noise's expectation, the mean over many training-mode draws.
    draws = torch.stack([noise(torch.ones(1, 3, 1, 1)) for _ in range(4000)]).mean(0)
    assert torch.allclose(draws, noise.eval()(torch.ones(1, 3, 1, 1)), atol=0.03)
    assert torch.equal(noise(x + 2), (x + 2) * 1.5)
    assert torch.equal(ShiftingNoise(0.0).train()(x + 1), x + 1)  # strength 0: untouched
    with pytest.raises(ValueError, match="bn_noise needs batch_norm"):
        build_model("lenet5", bn_noise=1.0)


def pooling_inputs():
    """Maps with the ties max pooling has to break as ATen does: constant regions (a crop's
    padding after the first conv), and windows whose maximum is in several places (e.g.
    (0, 1) and (1, 0): row by row, (0, 1) comes first); in the default layout (the compiled
    kernel's) and channels_last (PyTorch's)."""
    g = torch.Generator().manual_seed(0)
    for shape in [(4, 6, 28, 28), (3, 16, 10, 10), (2, 1, 6, 6), (2, 5, 8, 10), (1, 2, 4, 40)]:
        x = torch.randn(shape, generator=g)
        x[:, :, :4, :6] = 0.5
        x[:, :, 2:4, :2] = torch.tensor([[1.0, 2.0], [2.0, 0.0]])
        x[:, :, 2:4, 2:4] = torch.tensor([[1.0, 2.0], [2.0, 2.0]])
        x[:, :, 2:4, 4:6] = torch.tensor([[3.0, 1.0], [3.0, 3.0]])
        x[:, :, :2, -2:] = torch.tensor([[-1.0, -1.0], [-1.0, 5.0]])
        yield x
        yield x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("x", list(pooling_inputs()),
                         ids=lambda x: "x".join(map(str, x.shape)) + ("" if x.is_contiguous()
                                                                      else "-channels_last"))
def test_the_models_max_pooling_is_pytorchs_to_the_bit(x):
    """Values, gradients and layout of `MaxPool2x2` equal nn.MaxPool2d(2)'s exactly, so the
    compiled kernel changes no result; with a NaN in the batch ATen decides, as before."""
    for nan in (False, True):
        x = x.clone()
        if nan:
            x[0, 0, 1, 1] = x[-1, -1, 2, 3] = x[-1, -1, 3, 2] = float("nan")
        mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, expected = models.MaxPool2x2()(mine), F.max_pool2d(theirs, 2)
        assert out.stride() == expected.stride()
        assert torch.equal(out.isnan(), expected.isnan())
        assert torch.equal(out.nan_to_num(), expected.nan_to_num())
        grad = torch.randn_like(expected)
        out.backward(grad)
        expected.backward(grad)
        assert torch.equal(mine.grad, theirs.grad)


def test_lenet_pools_before_relu_and_computes_the_same():
    """LeNet-5 runs ReLU after its poolings (less work); the network in the course's order
    (ReLU, then pooling) gives the same outputs and gradients to the bit, also on images
    with a crop's constant padding, where pooling windows tie."""
    torch.manual_seed(0)
    model = LeNet5()
    f = model.features
    assert [type(m).__name__ for m in f] == ["Conv5x5", "Identity", "MaxPool2x2", "ReLU"] * 2
    course = nn.Sequential(f[0], f[1], f[3], f[2], f[4], f[5], f[7], f[6], model.classifier)
    x = torch.randn(8, 3, 32, 32)
    x[:, :, :4] = x[:, :, :, -3:] = -1.5  # padding, as the crop leaves it after normalising
    y = torch.arange(8)
    for layout in (torch.contiguous_format, torch.channels_last):
        net = copy.deepcopy(model).to(memory_format=layout)
        ref = copy.deepcopy(course).to(memory_format=layout)
        inputs = x.contiguous(memory_format=layout)
        out, expected = net(inputs), ref(inputs)
        assert torch.equal(out, expected)
        F.cross_entropy(out, y).backward()
        F.cross_entropy(expected, y).backward()
        for a, b in zip(net.parameters(), ref.parameters(), strict=True):
            assert torch.equal(a.grad, b.grad)


def test_lenet_keeps_the_course_order_for_other_activations_and_after_batch_norm():
    for options in ({"activation": "swish"}, {"activation": "leaky_relu"}, {"batch_norm": True}):
        kinds = [type(m).__name__ for m in LeNet5(**options).features]
        assert kinds[2:4] != ["MaxPool2x2", "ReLU"] and kinds[3] == "MaxPool2x2"
