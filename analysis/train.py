"""The training engine: `train(config)` turns a plain config dict into metrics.

Speed comes from the data path (after KellerJordan/airbench): every split is
one uint8 tensor on the training device, channels_last, each epoch
draws one permutation, batches are augmented and normalized as whole tensors, and
evaluation runs in batches without autograd. Metrics are accumulated as tensors and read
once per epoch, so nothing waits on the device step by step. Models run in
channels_last memory format, which is faster on CPU (oneDNN) as on GPU; on
CUDA the forward pass also runs under bf16 autocast. On the CPU the process keeps the
memory it frees (`keep_freed_memory`), a compiled kernel crops, flips and normalises each
batch in one pass, and LeNet-5 (kept in the default layout) runs its first convolution,
its convolutions' weight gradients and its poolings through compiled kernels
(`cpu_ops`). Everything else is one
code path, so the CPU tests cover the CUDA logic but for device selection.
The step's phases carry profiler labels (`phase`); benchmarks/bench_train.py
prints where the time goes, and bench_candidates.py what the speed-ups not
taken here (torch.compile, batched seeds, ...) would gain.

On CPU, the same config gives identical metrics run after run: the config
seed seeds the model initialisation (and dropout), and a torch.Generator
seeded likewise draws the batch order and the augmentations.
"""
import copy
import ctypes
import difflib
import math
import os
import time
from dataclasses import dataclass, replace
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function as phase  # labels for bench_train's profile
from tqdm import tqdm

from analysis import cpu_ops
from analysis.data import (
    Cifar10,
    apply_augmentation,
    channels_last,
    draw_augmentation,
    load_cifar10,
    normalization,
    normalize,
    stratified_split,
    take,
)
from analysis.models import ACTIVATIONS, INITS, build_model, count_params, memory_format
from analysis.probes import dead_units, flat_parameters, update_ratio

DEFAULTS = {
    "model": "lenet5",
    "activation": "relu",
    "batch_norm": False,
    "bn_noise": 0.0,
    "dropout": 0.0,
    "init": "default",
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 1e-4,
    "adam_eps": 1e-8,
    "l1": 0.0,
    "schedule": "none",
    "lr_milestones": [],
    "lr_gamma": 0.1,
    "warmup_epochs": 0,
    "label_smoothing": 0.0,
    "batch_size": 128,
    "epochs": 30,
    "crop_padding": 0,
    "flip_p": 0.0,
    "vflip_p": 0.0,
    "seed": 0,
    "subset": None,
    "val_size": 5000,
    "device": "auto",
    "keep_weights": False,
    "checkpoints": False,
}

MODELS = ("lenet5", "resnet8", "plain8", "resnet20", "plain20", "resnet56", "plain56")
LENET_OPTIONS = ("activation", "batch_norm", "dropout", "init", "bn_noise")
# Large enough to amortise per-call overhead; small enough that a batch's activations stay
# below the size at which the CPU's allocator hands memory back to the system after every
# batch (ResNet-20 evaluated twice as slowly at 1000 images a batch, page-faulting).
EVAL_BATCH = 250
DEAD_PROBE = 500  # validation images the dead units are counted on, every epoch
# Names a file holding the number of CPU threads this run may use; the runner rewrites it
# when other runs of its batch finish and their cores fall idle.
THREADS_FILE_ENV = "DLBOOK_THREADS_FILE"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


class ConfigError(ValueError):
    """A config key is unknown or its value is not allowed."""


def _choice(*options):
    return (lambda v: v in options), "one of " + ", ".join(map(repr, options))


def _boolean():
    return (lambda v: isinstance(v, bool)), "True or False"


def _integer(low, high=None):
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return (lambda v: _is_int(v) and low <= v and (high is None or v <= high)), allowed


def _real(test, allowed):
    return (lambda v: _is_real(v) and test(v)), f"a number {allowed}"


def _is_int(v):
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _milestones():
    def ok(v):
        return (isinstance(v, (list, tuple)) and all(_is_int(m) and m >= 1 for m in v)
                and list(v) == sorted(set(v)))
    return ok, "a list of increasing epoch numbers >= 1, e.g. [50, 75]"


# key -> (test, what is allowed), in the order of DEFAULTS.
RULES = {
    "model": _choice(*MODELS),
    "activation": _choice(*ACTIVATIONS),
    "batch_norm": _boolean(),
    "bn_noise": _real(lambda v: v >= 0, ">= 0 (with batch_norm only)"),
    "dropout": _real(lambda v: 0 <= v < 1, "in [0, 1)"),
    "init": _choice(*INITS),
    "optimizer": _choice("sgd", "adam"),
    "lr": _real(lambda v: v > 0, "> 0"),
    "momentum": _real(lambda v: 0 <= v < 1, "in [0, 1)"),
    "nesterov": _boolean(),
    "weight_decay": _real(lambda v: v >= 0, ">= 0"),
    "adam_eps": _real(lambda v: v > 0, "> 0"),
    "l1": _real(lambda v: v >= 0, ">= 0"),
    "schedule": _choice("none", "step", "cosine"),
    "lr_milestones": _milestones(),
    "lr_gamma": _real(lambda v: v > 0, "> 0"),
    "warmup_epochs": _integer(0),
    "label_smoothing": _real(lambda v: 0 <= v < 1, "in [0, 1)"),
    "batch_size": _integer(2),  # batch norm cannot train on a single image
    "epochs": _integer(0),
    "crop_padding": _integer(0, 16),
    "flip_p": _real(lambda v: 0 <= v <= 1, "in [0, 1]"),
    "vflip_p": _real(lambda v: 0 <= v <= 1, "in [0, 1]"),
    "seed": _integer(0),
    "subset": ((lambda v: v is None or (_is_int(v) and v >= 10)),
               "None (all training images) or an integer >= 10"),
    "val_size": _integer(10),
    "device": _choice("auto", "cpu", "cuda"),
    "keep_weights": _boolean(),
    "checkpoints": _boolean(),
}


def validate_config(config: dict) -> dict:
    """The full config (defaults filled in), or ConfigError naming the key and what it allows."""
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a dict, got {type(config).__name__}")
    for key in config:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}; valid keys: "
                              + ", ".join(DEFAULTS))
    resolved = {**DEFAULTS, **config}
    for key, value in resolved.items():
        ok, allowed = RULES[key]
        if not ok(value):
            raise ConfigError(f"config key {key!r}: got {value!r}, allowed: {allowed}"
                              + _yaml_hint(value))
        if isinstance(DEFAULTS[key], float):
            resolved[key] = float(value)
        elif _is_int(value):
            resolved[key] = int(value)
    resolved["lr_milestones"] = [int(m) for m in resolved["lr_milestones"]]

    if resolved["model"] != "lenet5":
        for key in LENET_OPTIONS:
            if resolved[key] != DEFAULTS[key]:
                raise ConfigError(f"config key {key!r}: got {resolved[key]!r}, but it applies "
                                  f"to model 'lenet5' only; allowed for {resolved['model']!r}: "
                                  f"{DEFAULTS[key]!r}")
    if resolved["bn_noise"] > 0 and not resolved["batch_norm"]:
        raise ConfigError(f"config key 'bn_noise': got {resolved['bn_noise']!r}, but the noise "
                          "follows each batch-norm layer: set batch_norm True, or bn_noise 0")
    if resolved["nesterov"] and not (resolved["optimizer"] == "sgd" and resolved["momentum"] > 0):
        raise ConfigError("config key 'nesterov': got True, allowed only with optimizer 'sgd' "
                          "and momentum > 0")
    return resolved


def _yaml_hint(value) -> str:
    """A hint for numbers that arrive as text, as PyYAML reads `1e-4` (no dot)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (a number in quotes? YAML reads 1e-4 as text; write 1.0e-4)"
    return ""


def select_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("config key 'device': got 'cuda', but CUDA is not available here; "
                          "allowed: 'auto', 'cpu'")
    return torch.device("cuda", torch.cuda.current_device())


def _memory(device: torch.device) -> dict | None:
    """The accelerator's memory and this run's peak use of it, in bytes (None on the CPU)."""
    if device.type != "cuda":
        return None
    return {"total": torch.cuda.get_device_properties(device).total_memory,
            "peak_allocated": torch.cuda.max_memory_allocated(device)}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@dataclass
class Engine:
    """Everything one run trains with; `train_epoch` advances it by one epoch."""

    config: dict
    data: Cifar10  # on the training device, train split cut to `subset`
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # batch order and augmentation, on the training device


def keep_freed_memory() -> None:
    """Ask glibc to keep memory the process frees, instead of handing it back to the system.

    PyTorch's CPU allocator frees every tensor as it goes; glibc returns blocks above its
    mmap threshold to the kernel, so a training step gets its activations (a few MB a
    batch) back as fresh pages and page-faults through them, step after step: a fifth of
    LeNet-5's step time on the CPU (benchmarks/bench_train.py). A no-op where glibc is
    not the C library. The cost: the process keeps its peak memory until it exits.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)  # glibc caps it; also stops it adapting
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def prepare(config: dict, data: Cifar10, device: torch.device) -> Engine:
    """Seeded model, optimizer and generator, and the data on `device`, for a validated config."""
    cfg = config
    keep_freed_memory()
    if cfg["subset"] is not None and cfg["subset"] < len(data.train_y):
        # Seed 0, not the run's seed: every run sees the same images, seeds vary the rest.
        keep, _ = stratified_split(data.train_y.cpu().numpy(), cfg["subset"], seed=0)
        keep = torch.from_numpy(keep).to(data.train_y.device)
        data = replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])
    data = data.to(device)
    data = replace(data, train_x=channels_last(data.train_x), val_x=channels_last(data.val_x),
                   test_x=channels_last(data.test_x))

    torch.manual_seed(cfg["seed"])
    options = {k: cfg[k] for k in LENET_OPTIONS} if cfg["model"] == "lenet5" else {}
    model = build_model(cfg["model"], **options)
    model = model.to(device, memory_format=memory_format(model))
    # fused: one kernel updates every parameter, instead of a handful of ops per tensor.
    if cfg["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                    nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"],
                                    fused=True)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], eps=cfg["adam_eps"],
                                     weight_decay=cfg["weight_decay"], fused=True)
    generator = torch.Generator(device=device).manual_seed(cfg["seed"])
    return Engine(cfg, data, model, optimizer, generator)


def learning_rate(config: dict, t: float) -> float:
    """The learning rate of the step that starts `t` epochs into training (t is fractional).

    step: times lr_gamma for every milestone reached (milestone m: from epoch m + 1 on);
    cosine: from lr down towards 0 at the end of the last epoch; warmup: linear from 0.
    """
    lr = config["lr"]
    if config["schedule"] == "step":
        lr *= config["lr_gamma"] ** sum(t >= m for m in config["lr_milestones"])
    elif config["schedule"] == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * t / config["epochs"]))
    if t < config["warmup_epochs"]:
        lr *= t / config["warmup_epochs"]
    return lr


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _inputs(x: torch.Tensor, data: Cifar10,
            layout: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """uint8 images -> the normalised float32 batch a model takes, in `layout` (a compiled
    kernel on the CPU; the same values)."""
    out = cpu_ops.augment_normalize(x, torch.arange(len(x)), None,
                                    *normalization(data.mean, data.std))
    if out is None:
        out = normalize(x, data.mean, data.std)
    return out.contiguous(memory_format=layout)


def _training_batch(engine: Engine, idx: torch.Tensor) -> torch.Tensor:
    """Training images idx, augmented, normalised, in the layout the model wants: in one
    pass of a compiled kernel on the CPU, the same values as the tensor operations."""
    cfg, data = engine.config, engine.data
    a = draw_augmentation(len(idx), crop_padding=cfg["crop_padding"], flip_p=cfg["flip_p"],
                          vflip_p=cfg["vflip_p"], generator=engine.generator,
                          device=data.train_x.device)
    x = cpu_ops.augment_normalize(data.train_x, idx, a, *normalization(data.mean, data.std))
    if x is None:
        x = take(data.train_x, idx)
        x = normalize(x if a is None else apply_augmentation(x, a), data.mean, data.std)
    return x.contiguous(memory_format=memory_format(engine.model))


def train_epoch(engine: Engine, epoch: int) -> dict:
    """One pass over the (subset) train split: train_loss, train_acc, lr, update_ratio,
    diverged_step.

    train_loss is the mean cross-entropy on the augmented batches as trained
    (with label smoothing, without the L1 penalty). update_ratio is the mean over the
    epoch's steps of each step's RMS parameter change over its learning rate
    (`probes.update_ratio`). `diverged_step` is the
    1-based step of the epoch whose loss was first non-finite, else None; the
    losses are checked once, at the end of the epoch, to avoid a sync per step.
    """
    cfg, data, model, optimizer = engine.config, engine.data, engine.model, engine.optimizer
    device = data.train_x.device
    n = len(data.train_y)
    order = torch.randperm(n, generator=engine.generator, device=engine.generator.device)
    batches = order.to(device).split(cfg["batch_size"])
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches = batches[:-1]  # batch norm cannot train on a single image
    losses = torch.zeros(len(batches), device=device)  # per step, summed over the batch
    correct = torch.zeros((), dtype=torch.int64, device=device)
    ratios = torch.zeros(len(batches), dtype=torch.float64, device=device)
    before = flat_parameters(model)

    model.train()
    for step, idx in enumerate(batches):
        lr = learning_rate(cfg, epoch - 1 + step / len(batches))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with phase("augment"):
            x = _training_batch(engine, idx)
            y = data.train_y.index_select(0, idx)
        with phase("forward"), _autocast(device):
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=cfg["label_smoothing"])
            objective = loss
            if cfg["l1"] > 0:
                objective = loss + cfg["l1"] * sum(p.abs().sum() for p in model.parameters())
        with phase("backward"):
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
        with phase("optimizer"):
            optimizer.step()
        with phase("update_ratio"):
            after = flat_parameters(model)
            ratios[step] = update_ratio(before, after, lr)
            before = after
        losses[step] = loss.detach() * len(idx)
        correct += (out.argmax(1) == y).sum()

    finite = torch.isfinite(losses)
    sizes = torch.tensor([len(idx) for idx in batches], dtype=losses.dtype)
    seen = int(sizes.sum())
    return {
        "train_loss": losses.sum().item() / seen,
        "train_acc": correct.item() / seen,
        "lr": lr,
        "update_ratio": ratio if math.isfinite(ratio := ratios.mean().item()) else None,
        "diverged_step": None if finite.all() else int((~finite).nonzero()[0]) + 1,
        "step_losses": (losses.cpu() / sizes).tolist(),  # one read per epoch, no sync per step
    }


@phase("evaluate")
@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             data: Cifar10) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode on uint8 images `x`."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for xb, yb in zip(x.split(EVAL_BATCH), y.split(EVAL_BATCH), strict=True):
        with _autocast(x.device):
            out = model(_inputs(xb, data, memory_format(model)))
        loss += F.cross_entropy(out.float(), yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    return loss.item() / len(y), correct.item() / len(y)


def follow_thread_hint() -> None:
    """Use as many CPU threads as the runner's hint file ($DLBOOK_THREADS_FILE) says.

    Read once an epoch, so a run that started beside others speeds up once it runs alone.
    A missing, unreadable or garbled file keeps the current count: a hint never fails a run.
    Another thread count can round sums differently (ResNet-20's losses move in the fourth
    digit, LeNet-5's not at all), as a different --jobs always could.
    """
    path = os.environ.get(THREADS_FILE_ENV)
    if not path:
        return
    try:
        with open(path) as fh:
            threads = int(fh.read().strip())
    except (OSError, ValueError):
        return
    # More threads than cores never helps, and a garbled huge number must not fail the run.
    threads = min(threads, os.cpu_count() or 1)
    if threads >= 1 and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def train(config: dict, data: Cifar10 | None = None, *, data_dir=None,
          progress: bool = True) -> dict:
    """Train one model as `config` says (see DEFAULTS) and return its metrics.

    The config is validated before any data is loaded. `data` defaults to
    `load_cifar10(data_dir, val_size=config["val_size"])`; given data is used
    as is. Returns a JSON-serialisable dict (but "model") with:
    config, status ("finished" | "diverged"), diverged_at (None | {epoch, step}),
    init {val_loss, val_acc, dead_<layer>...} of the untrained model, epochs (one dict
    per completed epoch: epoch, train_loss, train_acc (running, on augmented batches),
    val_loss, val_acc, clean_train_loss, clean_train_acc (eval mode, unaugmented, on
    as many training images as the validation split has), lr, update_ratio, one
    dead_<layer> per hidden layer of LeNet-5 (the fraction of its units that none of the
    first DEAD_PROBE validation images activates), seconds; the epoch
    that diverged is not included), steps (the mean loss of every training step, as
    {epoch, step, loss}, the diverged epoch's included), best_epoch and
    best_val_acc (None without a completed epoch), test {final, best} each
    {loss, acc} (None values when there are no such weights: final of a
    diverged run, best of a run without completed epochs), sizes of the
    splits used, device, device_memory (None on the CPU, else {total,
    peak_allocated} in bytes), seconds, num_params, model (the final weights
    on the CPU, only with keep_weights), and checkpoints (only with checkpoints: epoch ->
    the state_dict on the CPU at the start, 0, and at the end of every completed epoch).
    """
    cfg = validate_config(config)
    device = select_device(cfg["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if data is None:
        data = load_cifar10(data_dir, val_size=cfg["val_size"])
    engine = prepare(cfg, data, device)
    data, model = engine.data, engine.model

    init_loss, init_acc = evaluate(model, data.val_x, data.val_y, data)
    init_dead = _dead(engine)
    epochs, steps, best, best_model, diverged_at = [], [], None, None, None
    checkpoints = {0: _snapshot(model)} if cfg["checkpoints"] else None
    bar = tqdm(range(1, cfg["epochs"] + 1), disable=not progress, leave=False, unit="epoch",
               desc=f"{cfg['model']} {cfg['optimizer']} lr={cfg['lr']:g} seed={cfg['seed']}")
    for epoch in bar:
        follow_thread_hint()
        epoch_start = time.perf_counter()
        stats = train_epoch(engine, epoch)
        steps += [{"epoch": epoch, "step": i, "loss": loss if math.isfinite(loss) else None}
                  for i, loss in enumerate(stats["step_losses"], start=1)]
        if stats["diverged_step"] is not None:
            diverged_at = {"epoch": epoch, "step": stats["diverged_step"]}
            break
        epochs.append({"epoch": epoch, "train_loss": stats["train_loss"],
                       "train_acc": stats["train_acc"], **evaluate_epoch(engine),
                       "lr": stats["lr"], "update_ratio": stats["update_ratio"],
                       "seconds": time.perf_counter() - epoch_start})
        if checkpoints is not None:
            checkpoints[epoch] = _snapshot(model)
        val_acc = epochs[-1]["val_acc"]
        if best is None or val_acc > best["val_acc"]:
            best, best_model = epochs[-1], copy.deepcopy(model)
        bar.set_postfix(loss=f"{stats['train_loss']:.3f}", acc=f"{stats['train_acc']:.3f}",
                        val_acc=f"{val_acc:.3f}")
    bar.close()

    no_result = {"loss": None, "acc": None}
    final = no_result if diverged_at else _test(model, data)
    if best is None:
        best_test = no_result
    elif best is epochs[-1] and not diverged_at:
        best_test = final  # the final weights are the best ones
    else:
        best_test = _test(best_model, data)
    result = {
        "config": cfg,
        "status": "diverged" if diverged_at else "finished",
        "diverged_at": diverged_at,
        "init": {"val_loss": init_loss, "val_acc": init_acc, **init_dead},
        "epochs": epochs,
        "steps": steps,
        "best_epoch": best["epoch"] if best else None,
        "best_val_acc": best["val_acc"] if best else None,
        "test": {"final": final, "best": best_test},
        "sizes": {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)},
        "device": describe_device(device),
        "device_memory": _memory(device),
        "num_params": count_params(model),
        "model": None,
        "checkpoints": checkpoints,
    }
    if cfg["keep_weights"]:
        result["model"] = model.to("cpu", memory_format=torch.contiguous_format).eval()
    result["seconds"] = time.perf_counter() - start
    return result


def _snapshot(model: nn.Module) -> dict:
    """A copy of the weights and buffers on the CPU, in the default memory format."""
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            for k, v in model.state_dict().items()}


def evaluate_epoch(engine: Engine) -> dict:
    """What `train` measures after every epoch: val_loss, val_acc, clean_train_loss,
    clean_train_acc and, for LeNet-5, dead_<layer> per hidden layer."""
    data, model = engine.data, engine.model
    val_loss, val_acc = evaluate(model, data.val_x, data.val_y, data)
    # Training images as validation sees them (eval mode, no augmentation, fixed weights): the
    # running train_acc is measured on augmented batches while the weights move, so it
    # understates how well the training set is fit, and the overfitting gap needs this one.
    fit = slice(0, min(len(data.val_y), len(data.train_y)))
    fit_loss, fit_acc = evaluate(model, data.train_x[fit], data.train_y[fit], data)
    return {"val_loss": val_loss, "val_acc": val_acc, "clean_train_loss": fit_loss,
            "clean_train_acc": fit_acc, **_dead(engine)}


@phase("dead_units")
def _dead(engine: Engine) -> dict:
    """`probes.dead_units` as metrics: {"dead_conv1": fraction, ...}, for LeNet-5 only: the
    ResNets apply most of their ReLUs as functions, which hooks cannot see, and a count of
    the few they can would pass for the whole network's. Counted on the first DEAD_PROBE
    validation images, the same ones every epoch: a unit counts as dead when none of them
    activates it (tf-06 follows this through training)."""
    if engine.config["model"] != "lenet5":
        return {}
    x = _inputs(engine.data.val_x[:DEAD_PROBE], engine.data, memory_format(engine.model))
    return {f"dead_{layer}": fraction for layer, fraction in dead_units(engine.model, x).items()}


def _test(model: nn.Module, data: Cifar10) -> dict:
    loss, acc = evaluate(model, data.test_x, data.test_y, data)
    return {"loss": loss, "acc": acc}
