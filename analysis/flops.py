"""What a model costs: parameters, multiply-accumulates, bytes moved, and measured latency.

Units. fvcore counts one fused multiply-add as one "flop"; we call that number
what it is, a multiply-accumulate (MAC), and report FLOPs = 2 x MACs next to it
(the convention of `torch.utils.flop_counter.FlopCounterMode` and of most
papers). Counts are per image: the analysis runs one input of shape
(1, C, H, W) through the model in eval mode.

fvcore does not count every op: some it skips on purpose (ReLU, pooling by max,
concatenation, reshapes) and some it does not know (elementwise add). Both kinds
are listed by `skipped_ops`, never hidden.

Static analysis (cheap, deterministic; chapters may call it directly):
    module_costs, group_costs, grouped_costs, totals, skipped_ops, torch_flops,
    conv_macs, linear_macs, separable_ratio, conv3x3_layers, separable_table,
    module_traffic, squeezenet_variants
Measurement (slow; only the costs notebook calls it):
    time_module, latency_table, ceilings, hardware
Pure checks on measurements: latency_problems, attainable
Command line: `cli(args)` behind `dlbook flops MODEL [--input CxHxW] [--by module|stage]`.
"""
import os
import platform
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

with warnings.catch_warnings():  # fvcore's imports trip torch.jit deprecation warnings
    warnings.simplefilter("ignore")
    # fvcore's own lists of the ops it counts and the ops it skips on purpose
    # (private names, but the only record of its rules; tests pin the behaviour).
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
    from fvcore.nn.jit_analysis import _IGNORED_OPS

from analysis.models import build_model, conv3x3

IMAGENET_MODELS = ("squeezenet1_0", "alexnet")
BYTES_PER_ELEMENT = 4  # float32 everywhere in this book


# --- input shapes -------------------------------------------------------------

def default_input(name: str) -> tuple[int, int, int]:
    """CIFAR-10 images for our models, ImageNet crops for the torchvision ones."""
    return (3, 224, 224) if name in IMAGENET_MODELS else (3, 32, 32)


def parse_input(text: str) -> tuple[int, int, int]:
    """'3x32x32' -> (3, 32, 32)."""
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"input shape must look like 3x32x32, got {text!r}") from None
    return c, h, w


# --- fvcore, per module -------------------------------------------------------

def _analysis(model: nn.Module, input_shape) -> FlopCountAnalysis:
    """fvcore's analysis of one image; model in eval mode so BN counts as inference."""
    model.eval()
    fa = FlopCountAnalysis(model, torch.zeros(1, *input_shape))
    # We report skipped ops ourselves (skipped_ops), so silence fvcore's log lines.
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return fa


def _by_module(fa: FlopCountAnalysis) -> dict[str, int]:
    # torch.jit.trace (used by fvcore) warns that it is deprecated; that is fvcore's business.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(fa.by_module())


def _leaf_outputs(model: nn.Module, input_shape) -> dict[str, tuple]:
    """Output shape of every leaf module, in the order the forward pass calls them."""
    shapes, hooks = {}, []

    def recorder(name):
        def hook(mod, inp, out):
            shapes.setdefault(name, tuple(out.shape))  # returning a value would replace `out`
        return hook

    for name, m in model.named_modules():
        if name and not list(m.children()):
            hooks.append(m.register_forward_hook(recorder(name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _resolution(shape: tuple) -> str:
    """Spatial size of an output; a flat vector counts as a 1x1 map."""
    return f"{shape[-2]}x{shape[-1]}" if len(shape) == 4 else "1x1"


def _layer_names(model: nn.Module, blocks: list[str]) -> dict[str, str]:
    """Paper-style names (conv1, fire2, ..., fc8): number the blocks that hold a conv or
    linear layer in forward order; parameter-free blocks (ReLU, pooling, dropout) and
    batch norms join the weight layer before them."""
    prefix = {"Conv2d": "conv", "Linear": "fc", "BasicBlock": "block"}
    names, count, current = {}, 0, None
    for block in blocks:
        m = model.get_submodule(block)
        if any(isinstance(s, (nn.Conv2d, nn.Linear)) for s in m.modules()):
            count += 1
            kind = prefix.get(type(m).__name__, type(m).__name__.lower())
            current = f"{kind}{count}"
        names[block] = current or block
    return names


def module_costs(model: nn.Module, input_shape) -> pd.DataFrame:
    """One row per leaf module, in forward order: module, type, block, layer,
    resolution, output shape, params, macs, flops.

    `block` is the module's first two name components (features.3 = fire2 in
    SqueezeNet, stage1.0 in ResNet-20); `layer` the paper-style name of the weight
    layer it belongs to; `resolution` the spatial size of its output. MACs of ops
    that run in a parent's forward rather than in a leaf (none in our models) get
    a row '(outside leaf modules)' so that the column always sums to the total.
    """
    fa = _analysis(model, input_shape)
    macs = _by_module(fa)
    outputs = _leaf_outputs(model, input_shape)
    rows = []
    for name, shape in outputs.items():
        m = model.get_submodule(name)
        rows.append({
            "module": name,
            "type": type(m).__name__,
            "block": ".".join(name.split(".")[:2]),
            "resolution": _resolution(shape),
            "output": "x".join(str(s) for s in shape[1:]),
            "params": sum(p.numel() for p in m.parameters()),
            "macs": int(macs.get(name, 0)),
        })
    df = pd.DataFrame(rows)
    layer = _layer_names(model, list(dict.fromkeys(df["block"])))
    df.insert(3, "layer", df["block"].map(layer))
    rest = int(macs[""]) - int(df["macs"].sum())
    rest_params = sum(p.numel() for p in model.parameters()) - int(df["params"].sum())
    if rest or rest_params:
        df.loc[len(df)] = {"module": "(outside leaf modules)", "type": "", "block": "",
                           "layer": "", "resolution": "", "output": "",
                           "params": rest_params, "macs": rest}
    df["flops"] = 2 * df["macs"]
    return df


def group_costs(table: pd.DataFrame, by: str = "stage") -> pd.DataFrame:
    """Sum a `module_costs` table per `module` (no grouping), `layer` (conv1, fire2, ...),
    `block`, or `stage`.

    A stage is a run of consecutive modules whose outputs share one spatial
    resolution: everything computed between two downsampling steps. Shares
    (`params_pct`, `macs_pct`) are percentages of the model's total.
    """
    df = table.copy()
    if by == "module":
        out = df[["module", "type", "output", "params", "macs", "flops"]]
    elif by in ("layer", "block"):
        out = (df.groupby(by, sort=False)
               .agg(modules=("module", "size"), resolution=("resolution", "first"),
                    params=("params", "sum"), macs=("macs", "sum"), flops=("flops", "sum"))
               .reset_index())
    elif by == "stage":
        # A new stage starts whenever the resolution changes (consecutive runs, not values).
        df["stage"] = (df["resolution"] != df["resolution"].shift()).cumsum()
        # Name a stage by the weight layers computed in it, not by a pool that ends a layer.
        df["layer"] = df["layer"].where(df["params"] > 0)
        out = (df.groupby("stage")
               .agg(resolution=("resolution", "first"), layers=("layer", _span),
                    blocks=("block", _span),
                    params=("params", "sum"), macs=("macs", "sum"), flops=("flops", "sum"))
               .reset_index())
        # A pool that starts a new resolution but computes nothing fvcore counts.
        out["layers"] = out["layers"].mask(out["layers"] == "", "(pooling only)")
    else:
        raise ValueError(f"by must be module, layer, block or stage, got {by!r}")
    out = out.copy()
    out["params_pct"] = 100 * out["params"] / out["params"].sum()
    out["macs_pct"] = 100 * out["macs"] / max(out["macs"].sum(), 1)
    return out


def grouped_costs(model: nn.Module, input_shape, by: str = "stage") -> pd.DataFrame:
    """`group_costs(module_costs(model, input_shape), by)`."""
    return group_costs(module_costs(model, input_shape), by)


def _span(names) -> str:
    """'a', 'a, b' or 'a .. z' for a run of block names."""
    names = list(dict.fromkeys(n for n in names if isinstance(n, str)))
    return ", ".join(names) if len(names) <= 2 else f"{names[0]} .. {names[-1]}"


def totals(model: nn.Module, input_shape) -> dict:
    """params, macs, flops (= 2 macs) of one image, and fvcore's MACs per operator."""
    fa = _analysis(model, input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_op = dict(fa.by_operator())
    macs = int(sum(by_op.values()))
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs,
            "flops": 2 * macs, "macs_by_operator": by_op}


def skipped_ops(model: nn.Module, input_shape) -> pd.DataFrame:
    """Every traced op that fvcore counts as zero: op, calls, why.

    'ignored' ops are on fvcore's list of ops it deliberately does not count (ReLU,
    cat, reshapes, dropout, ...); 'unsupported' ops are ones it has no formula for
    (max pooling, elementwise add, pad) and would only warn about.
    """
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.trace(model, torch.zeros(1, *input_shape), check_trace=False)
    calls: dict[str, int] = {}
    for node in graph.inlined_graph.nodes():
        kind = node.kind()
        if kind.startswith("aten::") and kind not in _DEFAULT_SUPPORTED_OPS:
            calls[kind] = calls.get(kind, 0) + 1
    rows = [{"op": op, "calls": n, "why": "ignored" if op in _IGNORED_OPS else "unsupported"}
            for op, n in calls.items()]
    return pd.DataFrame(rows, columns=["op", "calls", "why"]).sort_values(
        ["why", "op"], ignore_index=True)


def torch_flops(model: nn.Module, input_shape) -> int:
    """PyTorch's own count (FlopCounterMode): 2 x MACs of convolutions and matmuls only."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


# --- formulas -----------------------------------------------------------------

def conv_macs(cin: int, cout: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Each output value needs cin/groups * k * k multiply-adds."""
    return h_out * w_out * cout * (cin // groups) * k * k


def linear_macs(fin: int, fout: int) -> int:
    return fin * fout


def separable_ratio(n: int, k: int = 3) -> float:
    """MobileNet's cost ratio standard / separable = 1 / (1/N + 1/k^2), N output channels."""
    return 1 / (1 / n + 1 / k**2)


# --- tf-08: ResNet-20's 3x3 convs and their depthwise separable replacements ----

def conv3x3_layers(input_shape=(3, 32, 32)) -> pd.DataFrame:
    """Every 3x3 conv of ResNet-20, in forward order: name, cin, cout, stride, h_in, w_in,
    h_out, w_out, and `shape`, a label shared by the convs that have the same shape."""
    model = build_model("resnet20").eval()
    rows, hooks = [], []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            def hook(mod, inp, out, name=name):
                rows.append({"name": name, "cin": mod.in_channels, "cout": mod.out_channels,
                             "stride": mod.stride[0], "h_in": inp[0].shape[2],
                             "w_in": inp[0].shape[3], "h_out": out.shape[2],
                             "w_out": out.shape[3]})
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    df = pd.DataFrame(rows)
    df["shape"] = [f"{r.cin}->{r.cout} s{r.stride} @{r.h_out}x{r.w_out}"
                   for r in df.itertuples()]
    return df


def _pair(cin: int, cout: int, stride: int) -> tuple[nn.Module, nn.Module]:
    """The standard 3x3 conv and its separable replacement, exactly as ResNet-20 builds them."""
    return conv3x3(cin, cout, stride), conv3x3(cin, cout, stride, separable=True)


def module_traffic(module: nn.Module, x: torch.Tensor) -> dict:
    """MACs (fvcore) and a simple model of the bytes a forward pass must move: every
    leaf module reads its input and its weights once and writes its output once.
    Caches can only do better, so bytes is a floor and intensity a ceiling."""
    moved, hooks = [0], []

    def hook(mod, inp, out):
        elements = inp[0].numel() + out.numel() + sum(p.numel() for p in mod.parameters())
        moved[0] += BYTES_PER_ELEMENT * elements

    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(hook) for m in leaves]
    with torch.no_grad():
        module.eval()(x)
    for h in hooks:
        h.remove()
    fa = FlopCountAnalysis(module, x)
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs = int(fa.total())
    return {"macs": macs, "bytes": moved[0], "intensity": macs / moved[0]}


def separable_table(input_shape=(3, 32, 32), batch: int = 1) -> pd.DataFrame:
    """One row per distinct 3x3-conv shape of ResNet-20 (`count` convs share it).

    Standard and separable MACs and params come from fvcore on the very modules the
    models use; `mac_ratio` = standard / separable; `formula` = 1 / (1/N + 1/9).
    Arithmetic intensity (MACs per byte, `module_traffic`) at the given batch, for
    the standard conv, the separable pair, and its depthwise half alone.
    """
    layers = conv3x3_layers(input_shape)
    groups = layers.groupby("shape", sort=False)
    rows = []
    for shape, g in groups:
        r = g.iloc[0]
        std, sep = _pair(int(r.cin), int(r.cout), int(r.stride))
        x = torch.zeros(batch, int(r.cin), int(r.h_in), int(r.w_in))
        t_std, t_sep = module_traffic(std, x), module_traffic(sep, x)
        t_dw = module_traffic(sep[0], x)  # the depthwise half alone
        rows.append({
            "shape": shape, "count": len(g), "layers": ", ".join(g["name"]),
            "cin": int(r.cin), "cout": int(r.cout), "stride": int(r.stride),
            "h_in": int(r.h_in), "w_in": int(r.w_in), "h_out": int(r.h_out), "w_out": int(r.w_out),
            "macs_standard": t_std["macs"] // batch, "macs_separable": t_sep["macs"] // batch,
            "params_standard": sum(p.numel() for p in std.parameters()),
            "params_separable": sum(p.numel() for p in sep.parameters()),
            "intensity_standard": t_std["intensity"],
            "intensity_separable": t_sep["intensity"],
            "intensity_depthwise": t_dw["intensity"],
        })
    df = pd.DataFrame(rows)
    df["mac_ratio"] = df["macs_standard"] / df["macs_separable"]
    df["formula"] = df["cout"].map(separable_ratio)
    df["param_ratio"] = df["params_standard"] / df["params_separable"]
    return df


# --- tf-08: measured latency ----------------------------------------------------

def devices(device: str = "auto") -> list[str]:
    """'auto': the CPU, plus the GPU when there is one; otherwise just the one named."""
    if device == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [device]


class Timing(NamedTuple):
    """A measured time: the median seconds of repeated blocks, and their spread (the
    interquartile range over the median; 0.1 = the middle half of the repeats lies
    within 10% of the median)."""
    median: float
    spread: float


# A latency whose repeats spread wider than this (relative IQR) is not a result: it is
# measured again and, if still as noisy, flagged. torch.utils.benchmark warns at the same
# 10% ("could indicate system fluctuation").
MAX_SPREAD = 0.1
RETRIES = 2  # how often latency_table measures a flagged row again before keeping the flag
REPEATS = 7  # timed blocks per measurement, at least (the median and IQR are over them)


def _block_times(step, threads: int, min_run_time: float, repeats: int = REPEATS) -> np.ndarray:
    """Seconds per call of `step` in each of `repeats` blocks or more, each block about
    `min_run_time / repeats` long and all of them `min_run_time` together, timed with
    torch.utils.benchmark (fixed thread count; CUDA synchronized around each block)."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=threads)
    timer.timeit(1)  # warm-up: first calls pay for allocations and kernel selection
    once = timer.timeit(1).times[0]
    number = max(1, round(min_run_time / repeats / once))  # calls per block
    times = []
    while len(times) < repeats or sum(times) * number < min_run_time:
        times += timer.timeit(number).times
    return np.array(times)


def _spread(times: np.ndarray) -> float:
    """Interquartile range over the median."""
    q25, median, q75 = np.quantile(times, [0.25, 0.5, 0.75])
    return float((q75 - q25) / median)


def time_module(module: nn.Module, x: torch.Tensor, backward: bool = False, threads: int = 1,
                min_run_time: float = 0.5, input_grad: bool = True,
                repeats: int = REPEATS) -> Timing:
    """Seconds of one forward (no grad) or one forward+backward of `module` on `x`:
    the median over repeated blocks and their spread (`Timing`).

    torch.utils.benchmark fixes the CPU thread count and synchronizes CUDA around
    each timed block. Backward computes the gradients of the weights and, when
    `input_grad` (a layer inside a network), of the input too; gradients are
    returned, not accumulated, so repeats do identical work.
    """
    if not backward:
        module.eval()

        def step():
            with torch.no_grad():
                module(x)
    else:
        module.train()
        inputs = list(module.parameters())
        if input_grad:
            inputs = [x.detach().requires_grad_(), *inputs]
        xin = inputs[0] if input_grad else x
        grad_out = torch.ones_like(module(xin))

        def step():
            torch.autograd.grad(module(xin), inputs, grad_out)

    times = _block_times(step, threads, min_run_time, repeats)
    return Timing(float(np.median(times)), _spread(times))


# What one measurement is of: its forward and its forward+backward row share these.
LATENCY_KEY = ["device", "batch", "scope", "shape"]
FORMS = ("standard", "separable")


def latency_problems(df: pd.DataFrame, max_spread: float = MAX_SPREAD) -> pd.Series:
    """Why each row of a latency table is not a trustworthy result: "" when it is sane,
    else the reasons, "; "-separated. A row is flagged

    - when, for either form, forward+backward took less time than forward alone for
      the same (device, batch, scope, shape): backward only adds work, so one of the
      two was disturbed (both rows are flagged, as either could be the wrong one);
    - when a form's spread (relative IQR of its repeats) exceeds `max_spread`.
    """
    reasons = pd.Series([[] for _ in df.index], index=df.index, dtype=object)
    measurement = [df[k] for k in LATENCY_KEY]
    for form in FORMS:
        seconds = df[f"{form}_s"]

        def of_pass(name, seconds=seconds):  # that pass's time, on both rows of a measurement
            return seconds.where(df["pass"] == name).groupby(measurement).transform("first")

        for i in df.index[of_pass("forward+backward") < of_pass("forward")]:
            reasons[i].append(f"{form} forward+backward faster than forward")
        for i in df.index[df[f"{form}_spread"] > max_spread]:
            reasons[i].append(f"{form} spread {df.at[i, f'{form}_spread']:.1%} "
                              f"> {100 * max_spread:g}%")
    return reasons.map("; ".join).rename("flag")


def latency_table(batch_sizes=(1, 32, 128), threads: int = 1, min_run_time: float = 0.5,
                  device: str = "auto", input_shape=(3, 32, 32), max_spread: float = MAX_SPREAD,
                  retries: int = RETRIES, repeats: int = REPEATS) -> pd.DataFrame:
    """Measured seconds of standard vs separable, per distinct 3x3-conv shape of ResNet-20
    (scope 'layer') and for the whole network (scope 'network', resnet20 vs
    resnet20_separable), forward and forward+backward, per batch size and device.

    Each row holds both forms, timed one right after the other so that load from
    other processes hits both alike: `<form>_s` the median seconds, `<form>_spread`
    the relative IQR of the repeats (`time_module`); `speedup` = standard / separable
    time. Rows that `latency_problems` flags are measured again, up to `retries`
    times; `flag` keeps the reasons of those still failing ("" for a sane row: only
    those are results) and `attempts` counts the measurements. MACs are per image;
    intensities (MACs per byte, `module_traffic`) at the row's batch size.
    """
    static = separable_table(input_shape)
    nets = {"standard": build_model("resnet20"), "separable": build_model("resnet20_separable")}
    rows, jobs = [], []
    for dev in devices(device):
        for batch in batch_sizes:
            cases = [("layer", r.shape, r.count, r.cout, r.formula, _pair(r.cin, r.cout, r.stride),
                      (batch, r.cin, r.h_in, r.w_in), True) for r in static.itertuples()]
            cases.append(("network", "resnet20", 1, None, None, tuple(nets.values()),
                          (batch, *input_shape), False))
            for scope, shape, count, cout, formula, pair, x_shape, input_grad in cases:
                x = torch.randn(*x_shape, device=dev)
                pair = [m.to(dev) for m in pair]
                traffic = [module_traffic(m, x) for m in pair]
                row = {"device": dev, "threads": threads, "batch": batch, "scope": scope,
                       "shape": shape, "count": count, "cout": cout,
                       "macs_standard": traffic[0]["macs"] // batch,
                       "macs_separable": traffic[1]["macs"] // batch,
                       "mac_ratio": traffic[0]["macs"] / traffic[1]["macs"], "formula": formula,
                       "intensity_standard": traffic[0]["intensity"],
                       "intensity_separable": traffic[1]["intensity"]}
                for backward in (False, True):
                    rows.append({**row, "pass": "forward+backward" if backward else "forward"})
                    jobs.append((pair, x, backward, input_grad))

    df = pd.DataFrame(rows)
    df[["standard_s", "standard_spread", "separable_s", "separable_spread"]] = float("nan")
    df["attempts"] = 0

    def measure(i):  # both forms of row i, one right after the other
        pair, x, backward, input_grad = jobs[i]
        for form, m in zip(FORMS, pair, strict=True):
            t = time_module(m, x, backward, threads, min_run_time, input_grad, repeats)
            df.loc[i, [f"{form}_s", f"{form}_spread"]] = [t.median, t.spread]
        df.loc[i, "attempts"] += 1

    for i in df.index:
        measure(i)
    df["flag"] = latency_problems(df, max_spread)
    for _ in range(retries):
        for i in df.index[df["flag"] != ""]:
            measure(i)
        df["flag"] = latency_problems(df, max_spread)
    df["speedup"] = df["standard_s"] / df["separable_s"]
    return df


# --- tf-08: the machine's ceilings (roofline) -----------------------------------

def ceilings(threads: int = 1, device: str = "cpu", matmul_size: int | None = None,
             copy_mib: int | None = None, min_run_time: float = 0.2,
             repeats: int = REPEATS) -> dict:
    """The two roofs of a roofline, measured at `threads` CPU threads on `device`.

    - `peak_gmacs`: multiply-adds per second (1e9) of a float32 matmul of two n x n
      matrices (n^3 MACs); n = `matmul_size`, by default 2048 on a CPU, 8192 on a GPU;
    - `bandwidth_gbs`: bytes per second (1e9) of copying a float32 buffer of
      `copy_mib` MiB (256 on a CPU, 1024 on a GPU: far larger than the caches) into
      another: 2 x its size moved, read and written.

    Each is the best block of `repeats` at least (a ceiling is the most the machine
    did; `*_spread` is the relative IQR of the blocks). `ridge` = peak / bandwidth:
    the intensity (MACs per byte) above which the matmul roof, not memory, limits.
    On CUDA the matmul is true float32 (PyTorch's default), while cuDNN may run
    convolutions in TF32, which can exceed this roof.
    """
    gpu = device != "cpu"
    n = matmul_size or (8192 if gpu else 2048)
    size = (copy_mib or (1024 if gpu else 256)) * 2**20
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        out = torch.empty(n, n, device=device)
        src = torch.ones(size // BYTES_PER_ELEMENT, device=device)
        dst = torch.empty_like(src)
        matmul = _block_times(lambda: torch.mm(a, b, out=out), threads, min_run_time, repeats)
        copy = _block_times(lambda: dst.copy_(src), threads, min_run_time, repeats)
    finally:
        torch.set_num_threads(before)
    peak, bandwidth = float(n**3 / matmul.min() / 1e9), float(2 * size / copy.min() / 1e9)
    return {"device": device, "threads": threads, "matmul_size": n, "copy_bytes": size,
            "peak_gmacs": peak, "peak_spread": _spread(matmul),
            "bandwidth_gbs": bandwidth, "bandwidth_spread": _spread(copy),
            "ridge": peak / bandwidth}


def attainable(intensity, peak: float, bandwidth: float):
    """The roofline: the most MACs per second a kernel of `intensity` MACs per byte can
    reach, min(peak, bandwidth x intensity) (units: peak's, with bandwidth in bytes per
    the same time); works on numbers and arrays alike."""
    return np.minimum(peak, np.multiply(bandwidth, intensity))


def hardware() -> dict:
    """What the timings ran on: CPU model, cores, torch build, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads_default": torch.get_num_threads(), "platform": platform.platform(),
            "mkldnn": torch.backends.mkldnn.is_available(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


# --- tf-09: where SqueezeNet's parameters would come back -----------------------

def _squeezenet(expand3x3_only=False, squeeze=True, fc_head=False, early_pooling=False):
    """torchvision SqueezeNet 1.0 with one or more of its design choices undone."""
    model = build_model("squeezenet1_0")
    for fire in model.features:
        if type(fire).__name__ != "Fire":
            continue
        s, e1, e3 = (fire.squeeze.out_channels, fire.expand1x1.out_channels,
                     fire.expand3x3.out_channels)
        cin = s
        if not squeeze:  # the expand filters see all the fire module's input channels
            cin = fire.squeeze.in_channels
            fire.squeeze, fire.squeeze_activation = nn.Identity(), nn.Identity()
            fire.expand3x3 = nn.Conv2d(cin, e3, 3, padding=1)
        if expand3x3_only or not squeeze:
            k = 3 if expand3x3_only else 1
            fire.expand1x1 = nn.Conv2d(cin, e1, k, padding=k // 2)
    if early_pooling:  # pools right after conv1, fire2, fire3 instead of conv1, fire4, fire8
        f = list(model.features)  # conv1 relu pool fire2-4 pool fire5-8 pool fire9
        model.features = nn.Sequential(*f[:4], f[6], f[4], f[11], f[5], *f[7:11], f[12])
    if fc_head:  # AlexNet's classifier: pool to 6x6, fc 4096-4096-1000
        model.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Dropout(), nn.Linear(512 * 36, 4096),
            nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))
    return model


def _alexnet_conv_head():
    """AlexNet's conv layers with SqueezeNet's head (1x1 conv to 1000 classes, global
    average pool) in place of its three fc layers."""
    alexnet = build_model("alexnet")
    return nn.Sequential(alexnet.features, nn.Dropout(), nn.Conv2d(256, 1000, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


VARIANTS = {
    "SqueezeNet 1.0": lambda: build_model("squeezenet1_0"),
    "SqueezeNet, 3x3 in place of 1x1 expand filters": lambda: _squeezenet(expand3x3_only=True),
    "SqueezeNet without squeeze layers": lambda: _squeezenet(squeeze=False),
    "SqueezeNet, no squeeze and all 3x3": lambda: _squeezenet(expand3x3_only=True, squeeze=False),
    "SqueezeNet with AlexNet's fc classifier": lambda: _squeezenet(fc_head=True),
    "SqueezeNet, early downsampling": lambda: _squeezenet(early_pooling=True),
    "AlexNet": lambda: build_model("alexnet"),
    "AlexNet with a 1x1-conv classifier": _alexnet_conv_head,
}


def squeezenet_variants(input_shape=(3, 224, 224)) -> pd.DataFrame:
    """Params and MACs of SqueezeNet 1.0 with one design choice undone at a time, and of
    AlexNet with and without its fc layers; `params_vs_squeezenet` is the ratio to
    the real SqueezeNet."""
    rows = [{"variant": name, **{k: v for k, v in totals(make(), input_shape).items()
                                 if k != "macs_by_operator"}}
            for name, make in VARIANTS.items()]
    df = pd.DataFrame(rows)
    df["params_vs_squeezenet"] = df["params"] / df["params"].iloc[0]
    df["macs_vs_squeezenet"] = df["macs"] / df["macs"].iloc[0]
    return df


# --- command line -------------------------------------------------------------

def format_table(df: pd.DataFrame) -> str:
    """Integers with thousands separators, shares with one decimal."""
    fmt = {c: "{:,}".format for c in ("params", "macs", "flops", "calls") if c in df}
    fmt.update({c: "{:.1f}".format for c in ("params_pct", "macs_pct") if c in df})
    return df.to_string(index=False, formatters=fmt)


def cli(args) -> int:
    """`dlbook flops MODEL [--input CxHxW] [--by module|stage]`: print the cost table."""
    shape = parse_input(args.input) if args.input else default_input(args.model)
    model = build_model(args.model)
    total = totals(model, shape)
    print(f"{args.model}, input {'x'.join(map(str, shape))}, one image, eval mode")
    print("MACs: multiply-accumulates as fvcore counts them (one fused multiply-add = one "
          "fvcore 'flop'); FLOPs = 2 x MACs.\n")
    print(format_table(grouped_costs(model, shape, args.by)))
    print(f"\ntotal: {total['params']:,} params, {total['macs']:,} MACs, "
          f"{total['flops']:,} FLOPs")
    print("MACs by operator: " + ", ".join(f"{k} {v:,}" for k, v in
                                          total["macs_by_operator"].items()))
    skipped = skipped_ops(model, shape)
    print("\nops fvcore counts as zero (ignored: on purpose; unsupported: no formula):")
    print(format_table(skipped) if len(skipped) else "none")
    return 0
