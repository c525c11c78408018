"""Seconds per epoch of our training engine against the course notebook's pipeline.

Both train LeNet-5 from the same initial weights on the same 45,000-image
train split with the same recipe: SGD lr 0.01, momentum 0.9, weight decay
1e-4, batch 128, random crop with padding 4 and horizontal flip with p=0.5,
then evaluate on the 5,000 validation images. They alternate epoch by epoch in
this one process, so load from other processes slows both alike.

The reference is written the way the course notebook does it: a Dataset that
turns each image into a PIL image (as torchvision's CIFAR10 does), torchvision
transforms (RandomCrop, RandomHorizontalFlip, ToTensor, Normalize), a
DataLoader with batch 128 and 2 workers, and a loop that reads loss and
accuracy with .item() every step.

    python benchmarks/bench_train.py --data-dir /path/to/data --epochs 3

The last line is `speedup: X.XX`: the reference's median seconds per epoch
over ours (the median, since other processes on a shared machine can slow
down single epochs several times). An epoch is the training pass plus the
validation pass; the reference's includes starting its DataLoader workers, as
the notebook's does. At a few epochs, accuracies of single runs differ by a
point or two from seed to seed, so --seeds 0 1 2 repeats the comparison and
reports the mean difference.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from analysis.data import load_cifar10
from analysis.models import build_model
from analysis.train import evaluate, prepare, select_device, train_epoch, validate_config


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
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_cifar10(args.data_dir)
    times = {"ours": [], "ref": []}
    differences = []
    for seed in args.seeds:
        differences.append(compare(data, seed, args, times))
    # The median, as other processes on a shared machine slow single epochs a lot.
    ours_s, ref_s = np.median(times["ours"]), np.median(times["ref"])
    print(f"seconds/epoch (median of {len(times['ours'])}): ours {ours_s:.2f}, "
          f"reference {ref_s:.2f}")
    print(f"test accuracy difference, ours - reference, mean over seeds {args.seeds}: "
          f"{100 * np.mean(differences):+.2f} points")
    print(f"speedup: {ref_s / ours_s:.2f}")


def compare(data, seed, args, times) -> float:
    """Train both pipelines from the same initial weights, epochs alternating; return the
    test accuracy difference (ours - reference)."""
    config = validate_config({"epochs": args.epochs, "crop_padding": 4, "flip_p": 0.5,
                              "seed": seed, "device": args.device})
    device = select_device(config["device"])
    engine = prepare(config, data, device)
    ours = engine.data

    torch.manual_seed(seed)  # the same initial weights as the engine's model
    model = build_model("lenet5").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    train_loader, val_loader, test_loader = reference_loaders(data)

    print(f"LeNet-5, seed {seed}, {len(data.train_y)} train / {len(data.val_y)} val images, "
          f"device {device}, {torch.get_num_threads()} threads")
    print(f"{'epoch':>5} {'ours s':>8} {'ref s':>8} {'ours val':>9} {'ref val':>8}")
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        train_epoch(engine, epoch)
        _, our_val = evaluate(engine.model, ours.val_x, ours.val_y, ours)
        times["ours"].append(time.perf_counter() - start)

        start = time.perf_counter()
        reference_epoch(model, optimizer, train_loader, device)
        _, ref_val = reference_evaluate(model, val_loader, device)
        times["ref"].append(time.perf_counter() - start)
        print(f"{epoch:>5} {times['ours'][-1]:>8.2f} {times['ref'][-1]:>8.2f} "
              f"{our_val:>9.4f} {ref_val:>8.4f}", flush=True)

    _, our_test = evaluate(engine.model, ours.test_x, ours.test_y, ours)
    _, ref_test = reference_evaluate(model, test_loader, device)
    print(f"test accuracy: ours {our_test:.4f}, reference {ref_test:.4f} "
          f"(difference {100 * (our_test - ref_test):+.2f} points)")
    return our_test - ref_test


if __name__ == "__main__":
    main()
