"""Looking inside a network while it runs: what the true/false statements ask about.

- `batchnorm_stats`: around every batch-norm layer, per channel, the mean and std of
  its input, of the normalised value, of its output after the learned scale and shift,
  and after the activation that follows; with gamma and beta (tf-01);
- `dead_units`: per hidden layer, the fraction of units whose pre-activation is never
  positive on a batch (tf-06; the training engine records it every epoch);
- `update_ratio`: the size of one optimiser step relative to the learning rate (tf-04;
  recorded by the engine every step);
- `eager_demo`, `loop_graphs` (with `capture_forward`, `capture_gradient`, `graph_nodes`,
  `LoopNet`): eager execution and the dynamic graph, demonstrated live (tf-02);
- `weight_sparsity`: the fraction of weights below thresholds, per layer (tf-07).

Layers are named as in the cost tables: conv/fc followed by the position of the weight
layer, counting from 1 (LeNet-5: conv1, conv2, fc3, fc4, fc5). Forward hooks see
modules only, so activations written as functions (ResNet's blocks use F.relu) are not
seen; LeNet-5 uses modules throughout.
"""
import math

import pandas as pd
import torch
from torch import nn

from analysis.models import Swish

ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, Swish, nn.SiLU)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def layer_names(model: nn.Module) -> dict[nn.Module, str]:
    """Every conv/linear, batch-norm and activation module of `model` with the name of the
    weight layer it belongs to: the last conv/linear before it in the model's order."""
    names, position, current = {}, 0, None
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            position += 1
            current = f"{'conv' if isinstance(m, nn.Conv2d) else 'fc'}{position}"
            names[m] = current
        elif isinstance(m, BATCH_NORMS + ACTIVATION_MODULES) and current is not None:
            names[m] = current
    return names


def _forward_with_hooks(model: nn.Module, x: torch.Tensor, hooks) -> torch.Tensor:
    """`model(x)` with forward hooks, (module, hook) pairs, attached for that call only."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        return model(x)
    finally:
        for h in handles:
            h.remove()


def _per_channel(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each channel (dim 1) over the batch and any spatial positions."""
    flat = t.detach().float().transpose(0, 1).reshape(t.shape[1], -1)
    return flat.mean(1), flat.std(1)


@torch.inference_mode()
def batchnorm_stats(model: nn.Module, x: torch.Tensor) -> pd.DataFrame:
    """Per batch-norm layer and channel, on the (normalised) inputs `x`, model in eval mode:
    in_mean/in_std (the layer's input), norm_mean/norm_std ((in - running mean) /
    sqrt(running var + eps): the normalised value, before the affine step), out_mean/
    out_std (gamma * normalised + beta: the layer's output), act_mean/act_std (after the
    activation module that follows, when there is one), gamma and beta.

    Eval mode: the network as it is used after training, normalising with its running
    statistics (in training mode each batch is normalised by its own statistics instead).
    """
    names = layer_names(model)
    following = _next_activation(model)
    seen: dict[nn.Module, dict] = {}

    def keep(module, kind):
        def hook(_, inputs, output):
            seen.setdefault(module, {})[kind] = (inputs[0], output)
        return hook

    hooks = [(bn, keep(bn, "bn")) for bn in following]
    hooks += [(act, keep(bn, "act")) for bn, act in following.items() if act is not None]
    model.eval()
    _forward_with_hooks(model, x, hooks)

    rows = []
    for bn in following:
        inp, out = seen[bn]["bn"]
        shape = (1, -1) + (1,) * (inp.dim() - 2)
        normalised = ((inp - bn.running_mean.view(shape))
                      / torch.sqrt(bn.running_var.view(shape) + bn.eps))
        stats = {"in": _per_channel(inp), "norm": _per_channel(normalised),
                 "out": _per_channel(out)}
        if "act" in seen[bn]:
            stats["act"] = _per_channel(seen[bn]["act"][1])
        for c in range(inp.shape[1]):
            row = {"layer": names[bn], "channel": c}
            for kind, (mean, std) in stats.items():
                row[f"{kind}_mean"], row[f"{kind}_std"] = mean[c].item(), std[c].item()
            row["gamma"], row["beta"] = bn.weight[c].item(), bn.bias[c].item()
            rows.append(row)
    return pd.DataFrame(rows)


def _next_activation(model: nn.Module) -> dict[nn.Module, nn.Module | None]:
    """Each batch-norm layer and the activation module right after it in its Sequential."""
    found = {}
    for container in model.modules():
        children = list(container.children())
        for i, m in enumerate(children):
            if isinstance(m, BATCH_NORMS):
                nxt = children[i + 1] if i + 1 < len(children) else None
                found[m] = nxt if isinstance(nxt, ACTIVATION_MODULES) else None
    return found


@torch.inference_mode()
def dead_units(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per hidden layer (by the activation modules' layer names), the fraction of units
    never active on the batch `x`: pre-activation <= 0 for every image and, for a conv
    layer's channel, at every position. Such a ReLU unit passes no gradient back for any
    of these images: on them it is dead. (For leaky ReLU the same units still pass a small
    gradient; counting them alike shows whether the negative slope keeps units alive.)
    Model in eval mode; the caller restores training mode."""
    names = layer_names(model)
    alive: dict[str, torch.Tensor] = {}

    def hook(module, inputs, _):
        pre = inputs[0]
        active = (pre > 0).transpose(0, 1).reshape(pre.shape[1], -1).any(1)
        alive[names[module]] = active

    model.eval()
    _forward_with_hooks(model, x, [(m, hook) for m in model.modules()
                                   if isinstance(m, ACTIVATION_MODULES) and m in names])
    # One read per layer, after the forward pass: no device sync inside it.
    return {layer: 1.0 - active.float().mean().item() for layer, active in alive.items()}


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All parameters as one detached float vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()


def update_ratio(before: torch.Tensor, after: torch.Tensor, lr: float) -> torch.Tensor:
    """The root mean square of one step's change of the parameters, over the learning rate
    (a tensor, not read, so that the training loop does not wait on the device).

    Plain SGD's is the RMS gradient; Adam's is the RMS of m̂ / (√v̂ + eps), about 1 when
    eps is far below √v̂ and about |m̂| / eps, tiny, when eps is far above it."""
    # In float64: a step that blows up (|change| ~ 1e20) would overflow its square in float32.
    # One fused norm, not a chain of ops: it runs every training step.
    norm = torch.linalg.vector_norm(after - before, dtype=torch.float64)
    return norm / (math.sqrt(after.numel()) * lr)  # lr 0 (warm-up's first step): inf or nan


# ---------------------------------------------------------------- eager execution (tf-02)

def capture_forward(model: nn.Module, module: nn.Module, x: torch.Tensor):
    """Run `model(x)` and return (output, what `module` produced mid-forward), taken by a
    forward hook that is removed again. The captured tensor keeps its graph: it can be
    printed, plotted or differentiated like any other."""
    captured = []
    out = _forward_with_hooks(model, x, [(module, lambda _, __, out: captured.append(out))])
    return out, captured[0]


def capture_gradient(tensor: torch.Tensor) -> list:
    """A list that receives d(loss)/d(tensor) when backward reaches `tensor` (a tensor hook:
    it runs during backward, in the middle of the graph, before the leaves' grads exist)."""
    grads = []

    def hook(grad):
        grads.append(grad.detach().clone())
    tensor.register_hook(hook)
    return grads


def graph_nodes(tensor: torch.Tensor) -> int:
    """The number of autograd nodes `tensor` was computed through, its leaves' gradient
    accumulators included: the graph that backward would walk, recorded as the forward ran."""
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo += [nxt for nxt, _ in node.next_functions]
    return len(seen)


class LoopNet(nn.Module):
    """A network with data-dependent control flow: it applies its hidden layer as many times
    as the input's norm, rounded down (at least once, at most `max_steps`). Python decides
    the loop count from the data of each input, so each input gets a graph of its own."""

    def __init__(self, width: int = 4, max_steps: int = 5):
        super().__init__()
        self.inp = nn.Linear(width, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)
        self.max_steps = max_steps

    def steps(self, x: torch.Tensor) -> int:
        return max(1, min(self.max_steps, math.floor(x.norm().item())))

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for _ in range(self.steps(x)):
            h = torch.tanh(self.hidden(h))
        return self.out(h)


def eager_demo(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """One forward and backward pass of `model` on (x, y), watched from the inside: the
    output of its first activation module captured mid-forward (`activation`), that
    tensor's gradient captured mid-backward by a tensor hook (`gradient`), how many of the
    model's parameters had a gradient at that moment (`leaf_grads_at_hook`, 0: backward
    had not reached them yet) and after backward (`leaf_grads_after`), and whether the
    captured gradient equals torch.autograd.grad's (`matches`)."""
    first = next(m for m in model.modules() if isinstance(m, ACTIVATION_MODULES))
    model.zero_grad(set_to_none=True)
    out, act = capture_forward(model, first, x)
    loss = nn.functional.cross_entropy(out, y)
    expected = torch.autograd.grad(loss, act, retain_graph=True)[0]  # before the hook exists
    seen = {}

    def hook(grad):
        seen["gradient"] = grad.detach().clone()
        seen["leaf_grads_at_hook"] = sum(p.grad is not None for p in model.parameters())
    act.register_hook(hook)
    loss.backward()
    return {"activation": act.detach(), "gradient": seen["gradient"],
            "leaf_grads_at_hook": seen["leaf_grads_at_hook"],
            "leaf_grads_after": sum(p.grad is not None for p in model.parameters()),
            "parameters": len(list(model.parameters())),
            "matches": bool(torch.allclose(seen["gradient"], expected))}


def loop_graphs(norms=(1.5, 2.5, 4.5), seed: int = 0) -> pd.DataFrame:
    """A `LoopNet` on inputs of the given norms: per input, the loop count Python chose from
    its data and the number of nodes in the graph its output was recorded with."""
    torch.manual_seed(seed)
    net = LoopNet(width=4, max_steps=max(5, math.floor(max(norms))))
    rows = []
    for norm in norms:
        x = torch.full((4,), norm / 2)  # a 4-vector of norm `norm`
        rows.append({"input norm": norm, "loop steps": net.steps(x),
                     "graph nodes": graph_nodes(net(x))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- sparsity (tf-07)

def weight_sparsity(state: dict, thresholds) -> pd.DataFrame:
    """Per conv/fc weight tensor of a state_dict (biases and batch norm left out) and per
    threshold t: the fraction of weights with |w| < t. Layers named in order (conv1, ...):
    the state_dict's order is the model's."""
    rows, position = [], 0
    for name, w in state.items():
        if not (name.endswith("weight") and w.dim() > 1):
            continue
        position += 1
        layer = f"{'conv' if w.dim() == 4 else 'fc'}{position}"
        magnitude = w.detach().abs().flatten()
        rows += [{"layer": layer, "threshold": t, "weights": magnitude.numel(),
                  "fraction": (magnitude < t).float().mean().item()} for t in thresholds]
    return pd.DataFrame(rows)
