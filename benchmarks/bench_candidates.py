"""What the speed-ups the engine does not use would gain: each candidate timed against the
engine's own way in one process, in interleaved rounds (medians), on LeNet-5 batches of
real CIFAR-10 images with the engine's recipe (crop 4, flip 0.5, SGD momentum 0.9).

- layers and memory format: the engine's LeNet-5 (default layout, compiled CPU kernels,
  `analysis.cpu_ops`) against PyTorch's own layers in channels_last (the engine before the
  kernels) and in the default layout, for a training step (forward, backward, optimizer)
  on the same batch;
- bfloat16 autocast on the CPU (as the engine does on CUDA), which changes results by more
  than float32 rounding;
- torch.compile (inductor, default mode) of the model: its compile time, its training step,
  and how many epochs of --subset images it would take to earn its compile time back;
- optimizer: the engine's fused SGD against foreach and per-parameter SGD;
- update ratio: the training step with the engine's per-step update ratio and without;
- evaluation batch: the validation pass (5,000 images) at several batch sizes;
- batched seeds: S seeds trained as one model (grouped convolutions, batched matmuls; each
  seed its own batch) against S separate steps, per seed.

    python benchmarks/bench_candidates.py --data-dir /path/to/data --threads 2

Candidates whose gain is below the noise of a shared machine read about 1.00x. At
--threads 1 the times are CPU times (see `interleaved`), at more threads wall times.
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from analysis import cpu_ops, train
from analysis.data import augment, load_cifar10
from analysis.models import build_model, memory_format
from analysis.probes import flat_parameters, update_ratio

CL = torch.channels_last
ENGINE = memory_format(build_model("lenet5"))  # the layout the engine keeps LeNet-5 in


def interleaved(candidates: dict, rounds: int = 15, calls: int = 5) -> dict:
    """Median milliseconds per call of each function, timed in interleaved rounds so that
    load from other processes falls on all of them alike. At one thread the time is this
    thread's CPU time, which other processes disturb far less than wall time."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    times = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()  # warm-up: allocations, oneDNN's kernel choice
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = clock()
            for _ in range(calls):
                fn()
            times[name].append((clock() - start) / calls * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def report(title: str, ms: dict, per: str = "step") -> None:
    base = next(iter(ms.values()))
    print(f"\n{title}")
    for name, value in ms.items():
        print(f"  {name:<38} {value:8.2f} ms/{per}  {base / value:5.2f}x")


def batches(data, count: int, size: int = 128, seed: int = 0) -> list:
    """`count` normalised, augmented batches (in the engine's layout) with their labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        idx = torch.randint(0, len(data.train_y), (size,), generator=g)
        x = augment(data.train_x.index_select(0, idx), crop_padding=4, flip_p=0.5, generator=g)
        out.append((train._inputs(x, data, ENGINE), data.train_y.index_select(0, idx)))
    return out


def stepper(model, batch, optimizer_kind: str = "fused", ratio: bool = False,
            bf16: bool = False):
    """A training step of `model` on `batch`, as the engine takes it."""
    x, y = batch
    fused = optimizer_kind == "fused"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4,
                                fused=fused or None, foreach=optimizer_kind == "foreach")
    before = [flat_parameters(model)]

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ratio:
            after = flat_parameters(model)
            update_ratio(before[0], after, 0.01)
            before[0] = after
    return step


def without_kernels(step):
    """`step` with PyTorch's layers only (as DLBOOK_NO_KERNEL=1 runs)."""
    def run():
        kernels = cpu_ops.kernels
        cpu_ops.kernels = lambda: None
        try:
            step()
        finally:
            cpu_ops.kernels = kernels
    return run


def lenet(fmt=ENGINE, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("lenet5").to(memory_format=fmt)


# ---------------------------------------------------------------- batched seeds

def stacked_lenet(models: list) -> list:
    """The parameters of several LeNet-5s as one grouped model's: conv weights and biases
    concatenated along output channels, linear weights stacked (seed, in, out)."""
    params = []
    for group in zip(*(m.parameters() for m in models), strict=True):
        if group[0].dim() == 4:
            t = torch.cat(group).contiguous(memory_format=CL)
        elif group[0].dim() == 2:
            t = torch.stack(group).transpose(1, 2).contiguous()
        elif len(params) < 4:  # conv biases
            t = torch.cat(group)
        else:
            t = torch.stack(group)[:, None, :]
        params.append(t.detach().requires_grad_())
    return params


def stacked_forward(params: list, x: torch.Tensor, seeds: int) -> torch.Tensor:
    """LeNet-5 of every seed at once: x is (batch, 3 * seeds, 32, 32), seed s's images in
    channels 3s..3s+2; returns (seeds, batch, 10)."""
    w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = params
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1, groups=seeds)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, w2, b2, groups=seeds)), 2)
    n = h.shape[0]
    h = h.reshape(n, seeds, -1, *h.shape[2:]).permute(1, 0, 2, 3, 4).reshape(seeds, n, -1)
    h = F.relu(torch.baddbmm(b3, h, w3))
    h = F.relu(torch.baddbmm(b4, h, w4))
    return torch.baddbmm(b5, h, w5)


def batched_seeds(data, seeds: int) -> dict:
    models = [lenet(seed=s) for s in range(seeds)]
    own = [batches(data, 1, seed=s)[0] for s in range(seeds)]  # each seed its own batch
    params = stacked_lenet(models)
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4, fused=True)
    x = torch.cat([b[0] for b in own], dim=1).contiguous(memory_format=CL)
    y = torch.stack([b[1] for b in own])
    with torch.no_grad():  # the same function: every seed's logits as its own model's
        out = stacked_forward(params, x, seeds)
        for s, m in enumerate(models):
            torch.testing.assert_close(out[s], m(own[s][0]), rtol=1e-4, atol=1e-5)

    def grouped():
        logits = stacked_forward(params, x, seeds)
        # Sum of the seeds' mean losses: each seed's gradient is its own model's.
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / y.shape[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    separate = [stepper(m, b) for m, b in zip(models, own, strict=True)]
    ms = interleaved({f"{seeds} separate steps": lambda: [s() for s in separate],
                      f"{seeds} seeds as one grouped model": grouped})
    return {name: value / seeds for name, value in ms.items()}


# ---------------------------------------------------------------- compile

def compiled(batch, subset: int, epochs: int) -> None:
    eager = lenet()
    model = torch.compile(lenet())
    step = stepper(model, batch)
    start = time.perf_counter()
    try:
        for _ in range(3):  # forward, backward and their recompilations, if any
            step()
    except Exception as e:  # no working compiler: the engine would not use it either
        print(f"\ntorch.compile: failed ({type(e).__name__}: {str(e).splitlines()[0]})")
        return
    compile_s = time.perf_counter() - start
    ms = interleaved({"eager (engine)": stepper(eager, batch), "torch.compile": step})
    report(f"torch.compile: compiled in {compile_s:.1f} s (forward and backward)", ms)
    gain = (ms["eager (engine)"] - ms["torch.compile"]) / 1e3 * -(-subset // 128)
    if gain <= 0:
        print(f"  never pays: slower per step than eager (compile {compile_s:.1f} s per slot)")
    else:
        print(f"  pays after {compile_s / gain:.1f} epochs of {subset} images "
              f"({epochs} epochs save {epochs * gain - compile_s:+.1f} s per run)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--subset", type=int, default=10_000,
                   help="training images of the runs torch.compile would have to pay off in")
    p.add_argument("--epochs", type=int, default=15, help="epochs of those runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[2, 3],
                   help="seed counts for the batched-seeds prototype")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"LeNet-5 candidates, {torch.get_num_threads()} threads, load average "
          + "/".join(f"{v:.2f}" for v in os.getloadavg()))
    data = load_cifar10(args.data_dir)
    batch = batches(data, 1)[0]

    report("layers and memory format (training step)", interleaved({
        "compiled kernels, default layout (engine)": stepper(lenet(), batch),
        "PyTorch's layers, channels_last": without_kernels(stepper(
            lenet(CL), (batch[0].contiguous(memory_format=CL), batch[1]))),
        "PyTorch's layers, default layout": without_kernels(stepper(
            lenet(torch.contiguous_format), (batch[0].contiguous(), batch[1])))}))
    report("bfloat16 autocast (training step; moves results beyond float32 tolerance)",
           interleaved({"float32 (engine)": stepper(lenet(), batch),
                        "bfloat16 autocast": stepper(lenet(), batch, bf16=True)}))
    report("optimizer (training step)", interleaved({
        "fused SGD (engine)": stepper(lenet(), batch),
        "foreach SGD": stepper(lenet(), batch, "foreach"),
        "per-parameter SGD": stepper(lenet(), batch, "for-loop")}))
    report("update ratio (training step)", interleaved({
        "with the per-step update ratio (engine)": stepper(lenet(), batch, ratio=True),
        "without": stepper(lenet(), batch)}))

    config = train.validate_config({"device": "cpu"})
    engine = train.prepare(config, data, torch.device("cpu"))
    sizes = (train.EVAL_BATCH, 100, 500, 1000)

    def pass_at(size):
        def run():
            train.EVAL_BATCH = size
            train.evaluate(engine.model, engine.data.val_x, engine.data.val_y, engine.data)
        return run
    default = train.EVAL_BATCH
    ms = interleaved({f"batch {s}" + (" (engine)" if s == default else ""): pass_at(s)
                      for s in dict.fromkeys(sizes)}, rounds=5, calls=1)
    train.EVAL_BATCH = default
    report("evaluation batch (validation pass, 5,000 images)", ms, per="pass")

    for seeds in args.seeds:
        report(f"batched seeds: {seeds} seeds (per seed)", batched_seeds(data, seeds))
    compiled(batch, args.subset, args.epochs)


if __name__ == "__main__":
    main()
