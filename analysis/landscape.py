"""Loss landscapes and curvature of a trained network (Li et al. 2018).

- `random_direction`: a filter-normalised Gaussian direction in weight space.
- `slice_1d`, `surface_2d`: loss and accuracy at theta + a d1 (+ b d2) on fixed images.
- `hessian_top_eigenvalue`: the Hessian's eigenvalue of largest magnitude, by power
  iteration on Hessian-vector products; with `scale=filter_scales(model)`, that of D H D,
  a sharpness that a function-preserving rescale of the filters cannot move.
- `sharpness`: both, the raw and the scale-invariant top eigenvalue.
- `rescale_filters`: the same function with every conv filter before a batch norm scaled by
  c (the test that the raw eigenvalue fails and the scale-invariant one passes).
- `recompute_batch_norm`: batch-norm statistics for an untrained network, before measuring it.

Every function takes images already normalised (float, e.g. `analysis.train._inputs`),
so one copy serves every point of a grid, and runs the model in eval mode: batch norm
uses its running statistics, which are buffers, not parameters, and so are neither
perturbed nor differentiated; the loss is then a fixed function of the weights. Work
runs on the model's device, in float32 (no autocast, and no TF32 in cuDNN on CUDA),
in batches of `batch_size` images so memory stays bounded.
"""
import contextlib
import copy
import warnings
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp
from tqdm import tqdm

BATCH = 500  # images per forward pass: ResNet-20's activations for 500 fit in a few hundred MB


def random_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """One direction per parameter of `model`, in `model.parameters()` order.

    Conv and linear weights (dim >= 2) get a Gaussian whose every filter (slice along dim 0)
    is rescaled to the norm of the same filter of the weights: ReLU networks with batch
    norm are invariant to a filter's scale, so only a direction relative to it means the
    same step for every filter and every network (Li et al.'s filter normalisation).
    Biases and batch-norm weights (dim <= 1) get zeros: they stay where training left them.
    The draws come from `generator` (on the CPU it gives the same numbers everywhere) and
    are moved to each parameter's device.
    """
    directions = []
    for p in model.parameters():
        w = p.detach()
        if w.dim() <= 1:
            directions.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=generator, device=generator.device,
                        dtype=w.dtype).to(w.device)
        w_norm = w.flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1)
        scale = w_norm / d_norm.clamp_min(1e-12)
        directions.append(d * scale.view(-1, *[1] * (w.dim() - 1)))
    return directions


@contextlib.contextmanager
def _float32():
    """cuDNN convolutions in full float32: by default PyTorch lets them round inputs to TF32
    (a 10-bit mantissa), noise as large as the differences a landscape shows."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_directions(model: nn.Module, directions: Sequence[Sequence[torch.Tensor]]) -> None:
    shapes = [p.shape for p in model.parameters()]
    for i, d in enumerate(directions, start=1):
        if [t.shape for t in d] != shapes:
            raise ValueError(f"direction {i} does not match the model's parameters (one tensor "
                             f"per parameter, in model.parameters() order, of the same shape); "
                             f"make it with random_direction(model, generator)")


@torch.inference_mode()
def loss_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            directions: Sequence[Sequence[torch.Tensor]] = (), coefs: Sequence[float] = (),
            batch_size: int = BATCH) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on (x, y) at theta + sum_i coefs[i] * directions[i].

    The model's own parameters are never written: `functional_call` swaps the moved
    tensors in for the call and back out, also when the call raises.
    """
    if len(directions) != len(coefs):
        raise ValueError(f"{len(directions)} directions but {len(coefs)} coefficients")
    _check_directions(model, directions)
    names = [name for name, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    for d, c in zip(directions, coefs, strict=True):
        params = [p + c * t for p, t in zip(params, d, strict=True)]
    moved = dict(zip(names, params, strict=True))
    device = params[0].device
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    with _float32(), _eval_mode(model):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            xb, yb = xb.to(device), yb.to(device)
            out = functional_call(model, moved, (xb,))
            loss += F.cross_entropy(out.float(), yb, reduction="sum").double()
            correct += (out.argmax(1) == yb).sum()
    return loss.item() / len(y), correct.item() / len(y)


def slice_1d(model: nn.Module, direction: Sequence[torch.Tensor], x: torch.Tensor,
             y: torch.Tensor, alphas: Sequence[float], *, batch_size: int = BATCH,
             progress: bool = True) -> pd.DataFrame:
    """Loss and accuracy along theta + alpha * direction: columns alpha, loss, acc."""
    rows = []
    for a in tqdm(list(alphas), disable=not progress, leave=False, desc="1-D slice"):
        loss, acc = loss_at(model, x, y, [direction], [float(a)], batch_size)
        rows.append({"alpha": float(a), "loss": loss, "acc": acc})
    return pd.DataFrame(rows, columns=["alpha", "loss", "acc"])


def surface_2d(model: nn.Module, d1: Sequence[torch.Tensor], d2: Sequence[torch.Tensor],
               x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float],
               betas: Sequence[float], *, batch_size: int = BATCH,
               progress: bool = True) -> pd.DataFrame:
    """Loss and accuracy on the grid theta + alpha * d1 + beta * d2: one row per
    (alpha, beta), alpha-major; columns alpha, beta, loss, acc."""
    grid = [(float(a), float(b)) for a in alphas for b in betas]
    rows = []
    for a, b in tqdm(grid, disable=not progress, leave=False, desc="2-D surface"):
        loss, acc = loss_at(model, x, y, [d1, d2], [a, b], batch_size)
        rows.append({"alpha": a, "beta": b, "loss": loss, "acc": acc})
    return pd.DataFrame(rows, columns=["alpha", "beta", "loss", "acc"])


def recompute_batch_norm(model: nn.Module, x: torch.Tensor, *,
                         batch_size: int = BATCH) -> nn.Module:
    """A copy of `model` (in eval mode) whose batch-norm running statistics are recomputed
    on the images x: per layer, the average over batches of x of the batch statistics.

    For an untrained network: its running statistics are still the defaults (mean 0,
    variance 1), so in eval mode its batch norm normalises nothing, a network that training
    never sees (its first step normalises with batch statistics). Measured on those
    defaults, ResNet-20's top Hessian eigenvalue at initialisation came out about 500 and
    plain-20's about 0.6 (200 CIFAR-10 images); recomputed, 66 and 73.
    """
    model = copy.deepcopy(model).eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches, not an exponential one
        m.train()  # only batch norm: dropout and the rest stay in eval mode
    with torch.no_grad():
        for xb in x.split(batch_size):
            model(xb.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


def hessian_vector_product(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           v: Sequence[torch.Tensor], *, loss_fn: Callable = F.cross_entropy,
                           batch_size: int = BATCH) -> list[torch.Tensor]:
    """H v, H the Hessian of the mean of `loss_fn(model(x), y)` over the images with respect
    to every trainable parameter (those with requires_grad, batch-norm weights and biases
    included); `v` and the result hold one tensor per such parameter.

    Forward-over-reverse (the directional derivative of the gradient along v, torch.func's
    jvp of grad): the same H v as double backward, in about 15% less time (ResNet-20, CPU).
    One batch at a time, each batch's share of H v added up, so memory holds one batch's
    work, not the whole set's.
    """
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if [t.shape for t in v] != [p.shape for p in named.values()]:
        raise ValueError("v must hold one tensor per trainable parameter, of the same shape")
    primals = {name: p.detach() for name, p in named.items()}
    tangents = dict(zip(named, v, strict=True))
    hv = [torch.zeros_like(p) for p in primals.values()]
    device = next(iter(primals.values())).device
    with _float32(), _eval_mode(model), warnings.catch_warnings():
        # torch's first forward-mode call compiles helpers with the deprecated torch.jit.script.
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            xb, yb = xb.to(device), yb.to(device)

            def loss(params, xb=xb, yb=yb):  # this batch's share of the mean
                return loss_fn(functional_call(model, params, (xb,)), yb) * (len(yb) / len(y))

            _, part = jvp(grad(loss), (primals,), (tangents,))
            for acc, t in zip(hv, part.values(), strict=True):
                acc += t
    return hv


def filter_scales(model: nn.Module) -> list[torch.Tensor]:
    """D of the scale-invariant sharpness, one tensor per trainable parameter: every
    coordinate of a conv or linear filter (a slice along dim 0 of a weight with dim >= 2)
    gets that filter's norm; biases and batch-norm parameters (dim <= 1) get 0, as Li et
    al.'s filter-normalised directions leave them out.

    Why: batch norm makes the loss blind to a filter's scale. Scale the filter by c (and the
    statistics with it) and the loss is the same function, but its Hessian in that filter's
    coordinates is divided by c^2, so the raw top eigenvalue measures the weights' scale as
    much as the surface. In units of each filter's own norm, D H D, the c cancels: its top
    eigenvalue is the curvature along filter-normalised directions, the ones Li et al. draw.
    """
    scales = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        w = p.detach()
        if w.dim() <= 1:
            scales.append(torch.zeros_like(w))
        else:
            norms = w.flatten(1).norm(dim=1).view(-1, *[1] * (w.dim() - 1))
            scales.append(norms.expand_as(w).clone())
    return scales


def rescale_filters(model: nn.Module, c: float) -> nn.Module:
    """A copy of `model` computing the same function (eval mode) with every conv weight
    (and bias, if any) multiplied by c: the batch norm that follows each conv gets its
    running mean times c, its running variance and its epsilon times c^2, so it gives the
    same output.

    Each conv must be followed by its batch norm in the order the modules are registered
    (as in every ResNet and plain net here); a conv without one would change the function,
    and is refused.
    """
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c}")
    model = copy.deepcopy(model).eval()
    conv = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if conv is not None:
                raise ValueError(f"conv {conv[0]} is not followed by a batch norm: scaling it "
                                 "would change the function")
            conv = (name, m)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and conv is not None:
            if m.num_features != conv[1].out_channels or not m.track_running_stats:
                raise ValueError(f"batch norm {name} does not normalise conv {conv[0]}'s "
                                 "output with running statistics")
            with torch.no_grad():
                conv[1].weight.mul_(c)
                if conv[1].bias is not None:
                    conv[1].bias.mul_(c)
                m.running_mean.mul_(c)
                m.running_var.mul_(c * c)
            m.eps *= c * c
            conv = None
    if conv is not None:
        raise ValueError(f"conv {conv[0]} is not followed by a batch norm: scaling it would "
                         "change the function")
    return model


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return sum(float((s * t).sum()) for s, t in zip(a, b, strict=True))


def hessian_top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                           iters: int = 20, tol: float = 1e-3,
                           generator: torch.Generator | None = None,
                           scale: Sequence[torch.Tensor] | None = None,
                           loss_fn: Callable = F.cross_entropy, batch_size: int = BATCH,
                           progress: bool = False) -> dict:
    """The Hessian's eigenvalue of largest magnitude, with its sign, by power iteration;
    with `scale` (D, one tensor per trainable parameter: `filter_scales`), that of D H D.

    The Hessian is that of `hessian_vector_product` (mean loss over (x, y), eval mode, every
    trainable parameter, as PyHessian and Li et al. take it). From a Gaussian start drawn
    with `generator` (kept to where D is non-zero), v <- A v / |A v| with A = H or D H D;
    the estimate is the Rayleigh quotient v.Av of the unit v. Stops once the estimate
    changes by less than `tol` relative to itself, or after `iters` products. Returns
    eigenvalue, iterations, converged, history (every estimate).
    """
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    params = [p for p in model.parameters() if p.requires_grad]
    if scale is not None and [t.shape for t in scale] != [p.shape for p in params]:
        raise ValueError("scale must hold one tensor per trainable parameter, of the same "
                         "shape: make it with filter_scales(model)")
    gen_device = generator.device if generator is not None else "cpu"
    v = [torch.randn(p.shape, generator=generator, device=gen_device, dtype=p.dtype).to(p.device)
         for p in params]
    if scale is not None:
        v = [t * (d != 0) for t, d in zip(v, scale, strict=True)]

    def product(v):
        if scale is None:
            return hessian_vector_product(model, x, y, v, loss_fn=loss_fn, batch_size=batch_size)
        dv = [d * t for d, t in zip(scale, v, strict=True)]
        hdv = hessian_vector_product(model, x, y, dv, loss_fn=loss_fn, batch_size=batch_size)
        return [d * t for d, t in zip(scale, hdv, strict=True)]

    history, converged = [], False
    for _ in tqdm(range(iters), disable=not progress, leave=False, desc="power iteration"):
        norm = _dot(v, v) ** 0.5
        v = [t / norm for t in v]
        hv = product(v)
        history.append(_dot(v, hv))
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            converged = True
            break
        if _dot(hv, hv) == 0:  # H v = 0: v is in the null space, the estimate 0 stands
            break
        v = hv
    return {"eigenvalue": history[-1], "iterations": len(history),
            "converged": converged, "history": history}


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = 20,
              tol: float = 1e-3, seed: int = 0, batch_size: int = BATCH) -> dict:
    """The top eigenvalue of the Hessian (`raw`) and of D H D (`invariant`, D =
    `filter_scales(model)`), each by `hessian_top_eigenvalue` from the same seeded start,
    with their iterations and whether they converged (`raw_iterations`, `raw_converged`,
    `invariant_iterations`, `invariant_converged`)."""
    out = {}
    for name, scale in (("raw", None), ("invariant", filter_scales(model))):
        r = hessian_top_eigenvalue(model, x, y, iters=iters, tol=tol, scale=scale,
                                   generator=torch.Generator().manual_seed(seed),
                                   batch_size=batch_size)
        out |= {name: r["eigenvalue"], f"{name}_iterations": r["iterations"],
                f"{name}_converged": r["converged"]}
    return out
