"""Seconds per epoch of our training engine against the course notebook's pipeline, where
the engine's time goes, and how close it comes to the machine's matmul roof.

Both train LeNet-5 from the same initial weights on the same 45,000-image
train split with the same recipe: SGD lr 0.01, momentum 0.9, weight decay
1e-4, batch 128, random crop with padding 4 and horizontal flip with p=0.5.
The reference is written the way the course notebook does it: a Dataset that
turns each image into a PIL image (as torchvision's CIFAR10 does), torchvision
transforms (RandomCrop, RandomHorizontalFlip, ToTensor, Normalize), a
DataLoader with batch 128 and 2 workers, and a loop that reads loss and
accuracy with .item() every step; its epoch is the training pass and the
validation pass (5,000 images), and includes starting its DataLoader workers,
as the notebook's does; it runs in a process of its own, as the notebook would, with the
course's LeNet-5 (plain modules) from the same initial weights. Ours is the engine's epoch as
`train.train` runs it:
`train_epoch`, then `evaluate_epoch` (the validation pass and the engine's
probes: 5,000 clean training images and 500 images for dead units, work the
reference does not do).

    python benchmarks/bench_train.py --data-dir /path/to/data --epochs 3 --threads 2

prints, in order:

1. the load average, and the machine's roofs at --threads threads measured in this run
   (`flops.ceilings`: float32 matmul GMAC/s, copy GB/s);
2. a torch.profiler breakdown of --profile-steps training steps and one epoch's
   evaluation, by the phases the engine labels (augment, forward, backward, optimizer,
   update_ratio; evaluate, dead_units) and by operator;
3. the epochs, ours and the reference's alternating, so that load from other processes
   slows both alike;
4. a summary: median seconds per epoch (other processes on a shared machine can slow
   single epochs several times), ours and the reference's, the speedup, and our
   achieved GMAC/s as a fraction of the matmul roof; also the CPU seconds each spent
   (see `cpu_seconds`), the steadier figure on a loaded machine. MACs: fvcore's count for one
   image's forward pass, 3 of them per training image (forward and backward), 1 per
   evaluated image.

At a few epochs, accuracies of single runs differ by a point or two from seed to seed,
so --seeds 0 1 2 repeats the comparison and reports the mean difference.
"""
import argparse
import contextlib
import multiprocessing
import os
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Dataset

from analysis import flops
from analysis.data import load_cifar10
from analysis.models import build_model
from analysis.train import (
    DEAD_PROBE,
    evaluate,
    evaluate_epoch,
    prepare,
    select_device,
    train_epoch,
    validate_config,
)

STEP_PHASES = ("augment", "forward", "backward", "optimizer", "update_ratio")
EPOCH_PHASES = ("evaluate", "dead_units")


class PILDataset(Dataset):
    """Images kept as HWC uint8 numpy, each returned through PIL and `transform`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.images = x.permute(0, 2, 3, 1).numpy()
        self.labels = y.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_loaders(data, batch_size=128, workers=2):
    normalize = T.Normalize(data.mean.tolist(), data.std.tolist())
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                          T.ToTensor(), normalize])
    eval_tf = T.Compose([T.ToTensor(), normalize])
    train = DataLoader(PILDataset(data.train_x, data.train_y, train_tf),
                       batch_size=batch_size, shuffle=True, num_workers=workers)
    val = DataLoader(PILDataset(data.val_x, data.val_y, eval_tf),
                     batch_size=batch_size, num_workers=workers)
    test = DataLoader(PILDataset(data.test_x, data.test_y, eval_tf),
                      batch_size=batch_size, num_workers=workers)
    return train, val, test


def reference_epoch(model, optimizer, loader, device):
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss / seen, correct / seen


def reference_evaluate(model, loader, device):
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            total_loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
    return total_loss / seen, correct / seen


def recipe(seed: int, device: str) -> dict:
    return validate_config({"crop_padding": 4, "flip_p": 0.5, "seed": seed, "device": device})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None,
                   help="folder holding cifar-10-batches-py/ (default: $DLBOOK_DATA or ./data)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for both (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one comparison per seed (same seed for both pipelines)")
    p.add_argument("--profile-steps", type=int, default=300,
                   help="training steps to profile (0: no profile)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = select_device(args.device)

    data = load_cifar10(args.data_dir)
    print(f"LeNet-5, {len(data.train_y)} train / {len(data.val_y)} val images, device {device}, "
          f"{threads} threads; load average {load()} (other processes slow every timing)")
    roof = flops.ceilings(threads=threads, device=device.type)
    print(f"roofs at {threads} threads: float32 matmul {roof['peak_gmacs']:.1f} GMAC/s, "
          f"copy {roof['bandwidth_gbs']:.1f} GB/s")
    macs = flops.totals(build_model("lenet5"), (3, 32, 32))["macs"]

    if args.profile_steps:
        print_profile(profile_engine(data, recipe(args.seeds[0], args.device), device,
                                     args.profile_steps))

    times = defaultdict(list)
    differences = [compare(data, seed, args, times) for seed in args.seeds]
    ours_s, ref_s = np.median(times["ours"]), np.median(times["ref"])
    # Per epoch: every training image forward and backward (3 forward passes' worth), every
    # evaluated image forward once.
    clean = min(len(data.val_y), len(data.train_y))
    ours_gmac = macs * (3 * len(data.train_y) + len(data.val_y) + clean + DEAD_PROBE) / 1e9
    ref_gmac = macs * (3 * len(data.train_y) + len(data.val_y)) / 1e9
    print(f"\ntest accuracy difference, ours - reference, mean over seeds {args.seeds}: "
          f"{100 * np.mean(differences):+.2f} points")
    print(f"\nsummary (median of {len(times['ours'])} epochs each, {threads} threads, "
          f"load average {load()}):")
    print(f"  seconds/epoch: ours {ours_s:.2f}, reference {ref_s:.2f}")
    ours_cpu, ref_cpu = np.median(times["ours_cpu"]), np.median(times["ref_cpu"])
    print(f"  CPU seconds/epoch: ours {ours_cpu:.2f}, reference {ref_cpu:.2f} "
          f"(ratio {ref_cpu / ours_cpu:.2f})")
    print(f"  achieved: ours {ours_gmac / ours_s:.1f} GMAC/s = "
          f"{ours_gmac / ours_s / roof['peak_gmacs']:.0%} of the {roof['peak_gmacs']:.1f} GMAC/s "
          f"matmul roof ({ours_gmac:.1f} GMAC/epoch), reference {ref_gmac / ref_s:.1f} GMAC/s "
          f"= {ref_gmac / ref_s / roof['peak_gmacs']:.0%}")
    print(f"speedup: {ref_s / ours_s:.2f}")


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the reference's DataLoader
    workers exit at the end of each pass). Less disturbed by other processes than wall time,
    but at several threads it also counts threads spinning while they wait for each other."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg()) + " (1/5/15 min)"


def course_lenet5() -> nn.Module:
    """LeNet-5 as the course notebook writes it: plain modules, ReLU before each pooling."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def reference_worker(conn, data_dir, seed: int, threads: int, device: str,
                     start_method: str) -> None:
    """The course pipeline in a process of its own, an epoch per request: nothing the engine
    sets for its process (glibc's allocator settings, see `train.keep_freed_memory`) reaches
    it, as nothing does in the course's notebook. Its DataLoader workers start as a fresh
    interpreter's would (`start_method`, fork on Linux), not as this process was (spawned:
    workers that import torch afresh every epoch took 10 s more per epoch)."""
    multiprocessing.set_start_method(start_method, force=True)
    torch.set_num_threads(threads)
    device = select_device(device)
    data = load_cifar10(data_dir)
    torch.manual_seed(seed)  # the same initial weights as the engine's model
    model = course_lenet5().to(device)
    torch.manual_seed(seed)
    ours = build_model("lenet5")
    assert all(torch.equal(a.cpu(), b) for a, b in zip(model.parameters(), ours.parameters(),
                                                        strict=True))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    train_loader, val_loader, test_loader = reference_loaders(data)
    conn.send("ready")
    while (request := conn.recv()) != "stop":
        start, start_cpu = time.perf_counter(), cpu_seconds()
        if request == "epoch":
            reference_epoch(model, optimizer, train_loader, device)
            _, acc = reference_evaluate(model, val_loader, device)
        else:  # "test"
            _, acc = reference_evaluate(model, test_loader, device)
        conn.send((time.perf_counter() - start, cpu_seconds() - start_cpu, acc))


def compare(data, seed, args, times) -> float:
    """Train both pipelines from the same initial weights, epochs alternating (ours here, the
    reference in a process of its own); return the test accuracy difference (ours -
    reference)."""
    conn, child = multiprocessing.Pipe()
    worker = multiprocessing.get_context("spawn").Process(
        target=reference_worker,  # not a daemon: it starts DataLoader workers
        args=(child, args.data_dir, seed, torch.get_num_threads(), args.device,
              multiprocessing.get_start_method()))
    worker.start()
    try:
        conn.recv()  # "ready": its start-up (importing torch, reading the data) is not timed
        return _alternate(data, seed, args, times, conn)
    finally:
        with contextlib.suppress(OSError):  # a worker that died has closed its end
            conn.send("stop")
        worker.join(timeout=60)
        if worker.is_alive():
            worker.terminate()


def _alternate(data, seed, args, times, conn) -> float:
    config = recipe(seed, args.device)
    device = select_device(config["device"])
    engine = prepare(config, data, device)

    print(f"\nepochs, seed {seed}:")
    print(f"{'epoch':>5} {'ours s':>8} {'ref s':>8} {'ours cpu':>9} {'ref cpu':>8} "
          f"{'ours val':>9} {'ref val':>8}")
    for epoch in range(1, args.epochs + 1):
        start, start_cpu = time.perf_counter(), cpu_seconds()
        train_epoch(engine, epoch)
        our_val = evaluate_epoch(engine)["val_acc"]
        times["ours"].append(time.perf_counter() - start)
        times["ours_cpu"].append(cpu_seconds() - start_cpu)

        conn.send("epoch")
        seconds, cpu, ref_val = conn.recv()
        times["ref"].append(seconds)
        times["ref_cpu"].append(cpu)
        print(f"{epoch:>5} {times['ours'][-1]:>8.2f} {times['ref'][-1]:>8.2f} "
              f"{times['ours_cpu'][-1]:>9.2f} {times['ref_cpu'][-1]:>8.2f} "
              f"{our_val:>9.4f} {ref_val:>8.4f}", flush=True)

    _, our_test = evaluate(engine.model, engine.data.test_x, engine.data.test_y, engine.data)
    conn.send("test")
    _, _, ref_test = conn.recv()
    print(f"test accuracy: ours {our_test:.4f}, reference {ref_test:.4f} "
          f"(difference {100 * (our_test - ref_test):+.2f} points)")
    return our_test - ref_test


def profile_engine(data, config: dict, device: torch.device, steps: int) -> dict:
    """torch.profiler over `steps` training steps and one `evaluate_epoch`, after a warm-up
    (the first steps pay for allocations and oneDNN's kernel choice).

    Returns steps, epoch_steps (steps in a full epoch), seconds (wall, profiled),
    unprofiled (wall, the same work without the profiler), phases {name: ms} (inclusive),
    ops [(op, phase, self ms)], the slowest first."""
    engine = prepare(config, data, device)
    full = engine.data
    images = min(len(full.train_y), steps * config["batch_size"])
    warm = replace(engine, data=replace(full, train_x=full.train_x[:10 * config["batch_size"]],
                                        train_y=full.train_y[:10 * config["batch_size"]]))
    train_epoch(warm, 1)
    engine = replace(engine, data=replace(full, train_x=full.train_x[:images],
                                          train_y=full.train_y[:images]))

    def work() -> float:
        start = time.perf_counter()
        train_epoch(engine, 2)
        # The evaluation as on the full split: clean-train images are the first len(val).
        evaluate_epoch(replace(engine, data=full))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    unprofiled = work()  # the profiler's own cost shows as the difference
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        seconds = work()

    labels = set(STEP_PHASES + EPOCH_PHASES)
    phases, ops = defaultdict(float), defaultdict(float)
    for event in prof.events():
        if event.name in labels:
            phases[event.name] += event.cpu_time_total / 1e3
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name not in labels:
            parent = parent.cpu_parent
        ops[event.name, parent.name if parent else "(outside)"] += event.self_cpu_time_total / 1e3
    batches = -(-len(full.train_y) // config["batch_size"])
    return {"steps": -(-images // config["batch_size"]), "epoch_steps": batches,
            "seconds": seconds, "unprofiled": unprofiled, "phases": dict(phases),
            "ops": sorted(((op, phase, ms) for (op, phase), ms in ops.items()),
                          key=lambda row: -row[2])}


def print_profile(prof: dict, top: int = 15) -> None:
    """The profile as a share of a full epoch: step phases scaled to the epoch's steps."""
    scale = prof["epoch_steps"] / prof["steps"]
    per_epoch = {name: ms * (scale if name in STEP_PHASES else 1)
                 for name, ms in prof["phases"].items()}
    total = prof["seconds"] * 1e3 - sum(prof["phases"].get(n, 0) for n in EPOCH_PHASES)
    loop = total - sum(prof["phases"].get(n, 0) for n in STEP_PHASES)  # the loop's own work
    per_epoch["(rest of the loop)"] = loop * scale
    epoch = sum(per_epoch.values())
    print(f"\nprofile: {prof['steps']} training steps and one epoch's evaluation, "
          f"{prof['seconds']:.2f} s under the profiler ({prof['unprofiled']:.2f} s without: "
          f"the profiler's cost per operator inflates phases of many small operators); "
          f"scaled to an epoch of {prof['epoch_steps']} steps: {epoch / 1e3:.2f} s")
    print(f"{'phase':<20} {'ms/step':>8} {'s/epoch':>8} {'share':>6}")
    for name in (*STEP_PHASES, "(rest of the loop)", *EPOCH_PHASES):
        if name not in per_epoch:
            continue
        step = f"{per_epoch[name] / prof['epoch_steps']:>8.2f}" if name not in EPOCH_PHASES \
            else f"{'':>8}"
        print(f"{name:<20} {step} {per_epoch[name] / 1e3:>8.3f} {per_epoch[name] / epoch:>6.1%}")
    profiled = sum(ms for _, _, ms in prof["ops"])
    print(f"\noperators by self time (top {top}; share of all profiled operator time):")
    print(f"{'operator':<45} {'phase':<14} {'ms':>8} {'share':>6}")
    for op, phase, ms in prof["ops"][:top]:
        print(f"{op[:45]:<45} {phase:<14} {ms:>8.1f} {ms / profiled:>6.1%}")


if __name__ == "__main__":
    main()
