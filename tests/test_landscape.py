import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from analysis.landscape import (
    filter_scales,
    hessian_top_eigenvalue,
    hessian_vector_product,
    loss_at,
    random_direction,
    recompute_batch_norm,
    rescale_filters,
    sharpness,
    slice_1d,
    surface_2d,
)


def tiny_net(dtype=torch.float32, activation=nn.ReLU):
    """conv + batch norm + linear, with running statistics away from their defaults."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), activation(), nn.Flatten(),
                          nn.Linear(3 * 2 * 2, 3)).to(dtype)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 2, 4, 4, dtype=dtype) * 2 + 1)  # moves the running statistics
    return model


def images(n=12, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, 4, 4, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def test_direction_is_filter_normalised_and_leaves_biases_and_bn_alone():
    model = tiny_net()
    d = random_direction(model, torch.Generator().manual_seed(0))
    for (name, p), t in zip(model.named_parameters(), d, strict=True):
        assert t.shape == p.shape
        if p.dim() >= 2:
            torch.testing.assert_close(t.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1),
                                       rtol=1e-5, atol=1e-6)
            assert not torch.allclose(t, p.detach())  # random, not the weights themselves
        else:
            assert torch.count_nonzero(t) == 0, name


def test_same_seed_same_direction():
    model = tiny_net()
    a, b, c = (random_direction(model, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
    assert not all(torch.equal(s, t) for s, t in zip(a, c, strict=True))


def test_slice_centre_is_the_unperturbed_loss_and_weights_stay():
    model, (x, y) = tiny_net(), images()
    before = state(model)
    d = random_direction(model, torch.Generator().manual_seed(0))
    model.train()  # the slice must evaluate in eval mode whatever mode it finds
    df = slice_1d(model, d, x, y, [-1.0, 0.0, 1.0], batch_size=5, progress=False)

    assert list(df.columns) == ["alpha", "loss", "acc"] and len(df) == 3
    assert model.training  # its mode is given back
    assert_same_state(model, before)
    with torch.no_grad():
        out = model.eval()(x)
    centre = df[df["alpha"] == 0].iloc[0]
    assert centre["loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert centre["acc"] == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert df["loss"].nunique() == 3  # the other points moved


def test_surface_has_the_grid_shape_and_weights_stay():
    model, (x, y) = tiny_net(), images()
    before = state(model)
    g = torch.Generator().manual_seed(0)
    d1, d2 = random_direction(model, g), random_direction(model, g)
    alphas, betas = [-0.5, 0.0, 0.5], [-1.0, 0.0, 0.5, 1.0]
    df = surface_2d(model, d1, d2, x, y, alphas, betas, progress=False)

    assert list(df.columns) == ["alpha", "beta", "loss", "acc"]
    assert df.pivot(index="alpha", columns="beta", values="loss").shape == (3, 4)
    assert_same_state(model, before)
    centre = df[(df["alpha"] == 0) & (df["beta"] == 0)]["loss"].item()
    assert centre == pytest.approx(loss_at(model, x, y)[0], rel=1e-6)


def test_weights_stay_when_the_evaluation_fails():
    model = tiny_net()
    before = state(model)
    d = random_direction(model, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError):
        loss_at(model, torch.randn(4, 5, 4, 4), torch.zeros(4, dtype=torch.long), [d], [1.0])
    assert_same_state(model, before)


def test_a_direction_of_another_network_is_refused():
    model, (x, y) = tiny_net(), images()
    other = random_direction(nn.Linear(3, 2), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="does not match"):
        slice_1d(model, other, x, y, [0.0], progress=False)


class Quadratic(nn.Module):
    """A 'network' whose output is its weights, ignoring the images."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return self.w.expand(len(x), -1)


def test_power_iteration_finds_the_top_eigenvalue_of_a_diagonal_quadratic():
    a = torch.tensor([1.0, -5.0, 3.0, 0.5, 2.0], dtype=torch.float64)

    def loss_fn(out, y):  # 0.5 w^T diag(a) w for every image: the Hessian is diag(a)
        return 0.5 * (a * out**2).sum(1).mean()

    model = Quadratic(torch.ones(5, dtype=torch.float64))
    x, y = torch.zeros(10, 1), torch.zeros(10, dtype=torch.long)
    result = hessian_top_eigenvalue(model, x, y, iters=200, tol=1e-12, loss_fn=loss_fn,
                                    batch_size=3, generator=torch.Generator().manual_seed(0))
    assert result["eigenvalue"] == pytest.approx(-5.0, rel=1e-6)  # largest |.|, sign kept
    assert result["converged"] and result["iterations"] == len(result["history"]) < 200


def test_power_iteration_stops_after_iters_unconverged():
    model, (x, y) = tiny_net(), images()
    result = hessian_top_eigenvalue(model, x, y, iters=2, tol=0.0,
                                    generator=torch.Generator().manual_seed(0))
    assert result["iterations"] == 2 and not result["converged"]


def flat_hessian(model, x, y):
    """The full Hessian of the mean cross-entropy in the flattened parameters (eval mode)."""
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().flatten() for _, p in named])

    def loss_of(theta):
        params, i = {}, 0
        for name, p in named:
            params[name] = theta[i:i + p.numel()].view_as(p)
            i += p.numel()
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat)


def test_hessian_agrees_with_autograd_on_a_tiny_network():
    model, (x, y) = tiny_net(torch.float64, nn.Tanh), images(dtype=torch.float64)
    model.eval()
    h = flat_hessian(model, x, y)
    g = torch.Generator().manual_seed(0)

    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]
    hv = hessian_vector_product(model, x, y, v, batch_size=5)  # batched: shares must add up
    torch.testing.assert_close(torch.cat([t.flatten() for t in hv]),
                               h @ torch.cat([t.flatten() for t in v]))

    eigenvalues = torch.linalg.eigvalsh(h)
    top = eigenvalues[eigenvalues.abs().argmax()].item()
    result = hessian_top_eigenvalue(model, x, y, iters=500, tol=1e-10, generator=g)
    assert result["eigenvalue"] == pytest.approx(top, rel=1e-4)


def test_recomputed_batch_norm_statistics_are_those_of_the_images():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 3))
    before = state(model)
    x = torch.randn(12, 2, 4, 4) * 3 + 2
    fresh = recompute_batch_norm(model, x, batch_size=6)  # two batches: their average

    assert_same_state(model, before)  # a copy: the model keeps its statistics
    bn = fresh[0]
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)))
    assert bn.momentum == model[0].momentum and not fresh.training
    halves = x.split(6)
    torch.testing.assert_close(bn.running_var,
                               sum(h.var((0, 2, 3)) for h in halves) / 2)  # unbiased, per batch


def test_filter_scales_are_the_filter_norms_and_leave_out_biases_and_batch_norm():
    model = tiny_net()
    for p, d in zip(model.parameters(), filter_scales(model), strict=True):
        assert d.shape == p.shape
        if p.dim() >= 2:
            norms = p.detach().flatten(1).norm(dim=1)
            torch.testing.assert_close(d, norms.view(-1, *[1] * (p.dim() - 1)).expand_as(p))
        else:
            assert torch.count_nonzero(d) == 0


def top_of(matrix: torch.Tensor) -> float:
    """The eigenvalue of largest magnitude of a symmetric matrix, with its sign."""
    eigenvalues = torch.linalg.eigvalsh(matrix)
    return eigenvalues[eigenvalues.abs().argmax()].item()


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


@pytest.mark.parametrize("c", [0.1, 2.0])
def test_a_function_preserving_rescale_moves_the_raw_sharpness_not_the_invariant_one(c):
    model, (x, y) = tiny_net(torch.float64, nn.Tanh), images(dtype=torch.float64)
    model.eval()
    scaled = rescale_filters(model, c)
    assert_same_state(model, state(tiny_net(torch.float64, nn.Tanh).eval()))  # a copy
    torch.testing.assert_close(scaled[0].weight, c * model[0].weight)
    assert loss_at(scaled, x, y) == pytest.approx(loss_at(model, x, y), rel=1e-12)

    h, h_scaled = flat_hessian(model, x, y), flat_hessian(scaled, x, y)
    conv = flat(torch.ones_like(p) * (p.dim() == 4) for p in model.parameters()).bool()
    # The conv weights' block of the Hessian is divided by c^2 exactly ...
    torch.testing.assert_close(h_scaled[conv][:, conv] * c**2, h[conv][:, conv])
    # ... which takes the raw top eigenvalue with it, towards 1/c^2 (the other parameters'
    # curvature stays: 56x at c = 0.1, 0.65x at c = 2), while D H D does not move.
    moved = top_of(h_scaled) / top_of(h)
    assert min(1, c**-2) < moved < max(1, c**-2) and abs(math.log(moved)) > 0.3
    d, d_scaled = flat(filter_scales(model)), flat(filter_scales(scaled))
    invariant = top_of(d[:, None] * h * d[None, :])
    assert top_of(d_scaled[:, None] * h_scaled * d_scaled[None, :]) == pytest.approx(invariant,
                                                                                  rel=1e-9)
    # The power iteration finds it on the rescaled network too, within its tolerance.
    found = hessian_top_eigenvalue(scaled, x, y, iters=200, tol=1e-9,
                                   scale=filter_scales(scaled),
                                   generator=torch.Generator().manual_seed(0))
    assert found["eigenvalue"] == pytest.approx(invariant, rel=1e-4)


def test_scaled_power_iteration_agrees_with_an_explicit_d_h_d():
    model, (x, y) = tiny_net(torch.float64, nn.Tanh), images(dtype=torch.float64)
    model.eval()
    d = flat(filter_scales(model))
    top = top_of(d[:, None] * flat_hessian(model, x, y) * d[None, :])
    found = hessian_top_eigenvalue(model, x, y, iters=200, tol=1e-9, scale=filter_scales(model),
                                   generator=torch.Generator().manual_seed(0))
    assert found["eigenvalue"] == pytest.approx(top, rel=1e-4) and found["converged"]


def test_sharpness_gives_both_estimates_from_the_same_start():
    model, (x, y) = tiny_net(), images()
    both = sharpness(model, x, y, iters=4, tol=0.0, seed=3)
    for name, scale in (("raw", None), ("invariant", filter_scales(model))):
        alone = hessian_top_eigenvalue(model, x, y, iters=4, tol=0.0, scale=scale,
                                       generator=torch.Generator().manual_seed(3))
        assert both[name] == alone["eigenvalue"]
        assert both[f"{name}_iterations"] == 4 and not both[f"{name}_converged"]


def test_rescale_refuses_a_conv_without_batch_norm_and_a_scale_of_another_shape():
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ValueError, match="not followed by a batch norm"):
        rescale_filters(plain, 2.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        rescale_filters(tiny_net(), 0.0)
    model, (x, y) = tiny_net(), images()
    with pytest.raises(ValueError, match="filter_scales"):
        hessian_top_eigenvalue(model, x, y, scale=filter_scales(plain))
