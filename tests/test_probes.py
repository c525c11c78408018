"""The measurements the true/false chapter rests on, on inputs with known answers."""
import math

import pytest
import torch
from torch import nn

from analysis import probes
from analysis.models import LeNet5


def test_layer_names_follow_the_cost_tables():
    model = LeNet5(batch_norm=True)
    names = probes.layer_names(model)
    acts = [names[m] for m in model.modules() if isinstance(m, nn.ReLU)]
    norms = [names[m] for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert acts == norms == ["conv1", "conv2", "fc3", "fc4"]


def test_dead_units_are_those_never_positive_on_the_batch():
    lin = nn.Linear(2, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1], [-1, 0]]))
        lin.bias.copy_(torch.tensor([0.0, 0, -100, -100]))  # units 3 and 4 never fire
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(4, 1))
    x = torch.rand(50, 2) + 0.1
    assert probes.dead_units(model, x) == {"fc1": 0.5}


def test_a_conv_channel_is_dead_only_if_no_position_of_any_image_fires():
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.copy_(torch.tensor([0.0, -0.5, -2.0, -5.0]))
    model = nn.Sequential(conv, nn.LeakyReLU(0.01))
    x = torch.zeros(3, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0  # a single pixel reaches 1: channel 2 fires there, 3 and 4 never
    assert probes.dead_units(model, x) == {"conv1": 0.5}


def test_batchnorm_stats_before_and_after_the_affine_step():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    identity = nn.Linear(3, 3)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(3))
        identity.bias.zero_()
    model = nn.Sequential(identity, bn, nn.ReLU())
    x = torch.randn(400, 3) * torch.tensor([2.0, 0.5, 1.0]) + torch.tensor([5.0, -1.0, 0.0])
    with torch.no_grad():
        bn.running_mean.copy_(x.mean(0))
        bn.running_var.copy_(x.var(0, unbiased=False))
        bn.weight.copy_(torch.tensor([2.0, 0.5, 1.0]))
        bn.bias.copy_(torch.tensor([1.0, -0.3, 0.0]))
    stats = probes.batchnorm_stats(model, x).set_index("channel")
    assert set(stats["layer"]) == {"fc1"}
    assert stats["in_mean"].tolist() == pytest.approx(x.mean(0).tolist(), abs=1e-5)
    assert stats["norm_mean"].tolist() == pytest.approx([0, 0, 0], abs=1e-4)
    assert stats["norm_std"].tolist() == pytest.approx([math.sqrt(400 / 399)] * 3, abs=1e-3)
    # After the affine step the mean is beta, not zero, and the std is |gamma|.
    assert stats["out_mean"].tolist() == pytest.approx([1.0, -0.3, 0.0], abs=1e-4)
    assert stats["out_std"].tolist() == pytest.approx([2.0, 0.5, 1.0], rel=1e-2)
    expected = torch.relu(bn.eval()(x)).mean(0)
    assert stats["act_mean"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert stats["gamma"].tolist() == pytest.approx([2.0, 0.5, 1.0])
    assert stats["beta"].tolist() == pytest.approx([1.0, -0.3, 0.0])


def test_batchnorm_stats_of_a_bn_lenet_cover_every_bn_channel():
    stats = probes.batchnorm_stats(LeNet5(batch_norm=True), torch.randn(8, 3, 32, 32))
    assert stats.groupby("layer").size().to_dict() == {"conv1": 6, "conv2": 16, "fc3": 120,
                                                       "fc4": 84}
    assert stats[["act_mean", "act_std"]].notna().all().all()


def test_update_ratio_of_an_adam_step_falls_with_a_large_epsilon():
    """Adam's first step moves each weight by lr * g / (|g| + eps): a ratio of about 1 to
    the learning rate when eps << |g|, about |g| / eps when eps >> |g|."""
    def one_step(eps):
        w = nn.Parameter(torch.zeros(100))
        opt = torch.optim.Adam([w], lr=0.1, eps=eps)
        w.grad = torch.full((100,), 0.01)
        before = w.detach().clone()
        opt.step()
        return probes.update_ratio(before, w.detach(), 0.1).item()

    assert one_step(1e-8) == pytest.approx(1.0, rel=1e-4)
    assert one_step(1.0) == pytest.approx(0.01 / 1.01, rel=1e-4)


def test_update_ratio_is_the_rms_change_over_the_learning_rate():
    before, after = torch.zeros(4), torch.tensor([0.1, -0.1, 0.1, -0.1])
    assert probes.update_ratio(before, after, 0.05).item() == pytest.approx(2.0)


def test_graph_nodes_count_the_operations_and_the_leaves():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    assert probes.graph_nodes((a * b).sum()) == 4  # sum, mul, and a's and b's accumulators
    assert probes.graph_nodes(a * 2) == 2


def test_a_loop_net_records_a_different_graph_per_input():
    torch.manual_seed(0)
    net = probes.LoopNet(width=4, max_steps=5)
    inputs = [torch.full((4,), v) for v in (0.6, 1.1, 1.6)]  # norms 1.2, 2.2, 3.2
    assert [net.steps(x) for x in inputs] == [1, 2, 3]
    counts = [probes.graph_nodes(net(x)) for x in inputs]
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] - counts[1] == counts[1] - counts[0]  # one more hidden layer each time


def test_captured_activation_and_gradient_are_the_real_ones():
    torch.manual_seed(0)
    model = LeNet5()
    x = torch.randn(2, 3, 32, 32)
    out, act = probes.capture_forward(model, model.features[2], x)
    assert torch.equal(act, model.features[:3](x))
    loss = out.sum()
    expected = torch.autograd.grad(loss, act, retain_graph=True)[0]
    grads = probes.capture_gradient(act)
    loss.backward()
    assert len(grads) == 1 and torch.allclose(grads[0], expected)


def test_weight_sparsity_fractions_per_layer_and_threshold():
    state = {"conv.weight": torch.tensor([0.0, 0.01, 0.1, 1.0]).view(1, 1, 2, 2),
             "conv.bias": torch.zeros(1),
             "fc.weight": torch.tensor([[0.0005, 0.5]])}
    got = probes.weight_sparsity(state, [1e-3, 0.05])
    assert got[["layer", "threshold", "fraction"]].values.tolist() == [
        ["conv1", 1e-3, 0.25], ["conv1", 0.05, 0.5], ["fc2", 1e-3, 0.5], ["fc2", 0.05, 0.5]]


def test_eager_demo_catches_the_gradient_before_the_weights_get_theirs():
    torch.manual_seed(0)
    demo = probes.eager_demo(LeNet5(), torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert demo["activation"].shape == (4, 6, 14, 14)  # conv1's ReLU output, after pooling
    assert demo["gradient"].shape == demo["activation"].shape
    assert demo["matches"]
    # conv1's weight and bias get theirs after the hook; the layers above got theirs first.
    assert demo["leaf_grads_at_hook"] == demo["parameters"] - 2
    assert demo["leaf_grads_after"] == demo["parameters"]


def test_loop_graphs_grow_with_the_loop_count_the_data_chose():
    table = probes.loop_graphs(norms=(1.5, 2.5, 4.5))
    assert table["loop steps"].tolist() == [1, 2, 4]
    nodes = table["graph nodes"].tolist()
    assert nodes[1] - nodes[0] > 0 and nodes[2] - nodes[1] == 2 * (nodes[1] - nodes[0])
