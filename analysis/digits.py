"""A counter-example to "data augmentation helps any network" (tf-03), runnable offline.

scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download) are
classified by a small CNN trained with and without an augmentation that breaks
the labels: a vertical flip or a 180-degree rotation. A 6 rotated by 180
degrees is drawn like a 9 (and a 9 like a 6), and a flipped 2 or 5 is not a 2
or 5 any more, so the augmented network is taught that these shapes share a
label. Augmentation encodes an invariance; it helps only where the invariance
holds. The 6/9 confusion counts show the damage where it is expected.

On the CPU, one seed gives the same numbers run after run: the seed sets the
weight initialisation, and a torch.Generator seeded with it draws the batch
order and the augmentations.
"""
import time

import torch
import torch.nn.functional as F
from torch import nn

AUGMENTATIONS = ("none", "vflip", "rot180")
CLASSES = tuple(range(10))
TEST_SIZE = 0.25
SPLIT_SEED = 0  # the split is part of the data set, not of a run: every seed sees the same one
NUM_PARAMS = 9_930  # of SmallCNN, checked by the tests


def load(seed: int = SPLIT_SEED) -> dict:
    """The digits as float images (N, 1, 8, 8) in [0, 1] and int64 labels, split 75/25.

    The split is stratified by class; `seed` is the split's own seed, and `train`
    never passes a run's seed here, so every run sees the same split and runs
    differ only in what they control. Returns train_x, train_y, test_x, test_y.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # pixels are 0..16
    y = torch.tensor(digits.target, dtype=torch.int64)
    train_i, test_i = train_test_split(torch.arange(len(y)).numpy(), test_size=TEST_SIZE,
                                       stratify=y.numpy(), random_state=seed)
    train_i, test_i = torch.from_numpy(train_i), torch.from_numpy(test_i)
    return {"train_x": x[train_i], "train_y": y[train_i],
            "test_x": x[test_i], "test_y": y[test_i]}


def augment(x: torch.Tensor, name: str, p: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of the batch (N, C, H, W) independently transformed with probability p.

    "vflip" turns it upside down (rows reversed), "rot180" rotates it by 180 degrees
    (rows and columns reversed), "none" returns the batch as it is. The draws come
    from `generator`, so the same generator state gives the same batch.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; allowed: {', '.join(AUGMENTATIONS)}")
    if not 0 <= p <= 1:
        raise ValueError(f"augmentation probability p must be in [0, 1], got {p}")
    if name == "none":
        return x
    # One draw per image even when p is 0 or 1, so p never changes later random numbers.
    chosen = torch.rand(len(x), generator=generator) < p
    dims = (2,) if name == "vflip" else (2, 3)
    return torch.where(chosen[:, None, None, None], x.flip(dims), x)


class SmallCNN(nn.Sequential):
    """conv 1->16 3x3, ReLU, conv 16->32 3x3, ReLU, 2x2 max-pool, linear 512->10.

    9,930 parameters (160 + 4,640 + 5,130). Padding keeps 8x8 until the pool, so
    the classifier sees a 4x4 map of 32 channels: enough to separate the ten
    digits at about 98%, small enough to train in a second or two on one thread.
    """

    def __init__(self):
        super().__init__(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 4 * 4, len(CLASSES)),
        )


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor) -> list[list[int]]:
    """Counts of true class (rows) against predicted class (columns), 10 x 10."""
    k = len(CLASSES)
    counts = torch.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    return counts.tolist()


def confusion_6_9(matrix: list[list[int]]) -> dict:
    """How many test 6s were called 9, and 9s called 6: the pairs a rotation swaps."""
    return {"six_as_nine": matrix[6][9], "nine_as_six": matrix[9][6]}


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model(x).argmax(1)


def _accuracy(predicted: torch.Tensor, y: torch.Tensor) -> float:
    return (predicted == y).sum().item() / len(y)  # exact in Python floats, not float32


def train(augmentation: str = "none", seed: int = 0, epochs: int = 20, p: float = 0.5,
          lr: float = 3e-3, batch_size: int = 64, data: dict | None = None) -> dict:
    """Train SmallCNN on the digits with Adam on the CPU; evaluate on the test split.

    Returns test_acc (final epoch), epochs (per epoch: train_loss, the mean loss of
    its augmented batches, and test_acc), confusion (10 x 10, true classes as rows),
    six_as_nine, nine_as_six, num_params and seconds (wall clock, the load included when
    `data` is not given), plus the options it ran with.
    The test split is the only held-out set: the epoch count is fixed in advance,
    never chosen on it. `data` is `load()`'s result, to share one load between runs.
    """
    if augmentation not in AUGMENTATIONS:  # fail before training, not at the first batch
        raise ValueError(f"unknown augmentation {augmentation!r}; "
                         f"allowed: {', '.join(AUGMENTATIONS)}")
    start = time.perf_counter()
    data = data or load()
    x, y = data["train_x"], data["train_y"]
    torch.manual_seed(seed)
    model = SmallCNN()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for batch in order.split(batch_size):
            xb = augment(x[batch], augmentation, p, generator)
            loss = F.cross_entropy(model(xb), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history.append({"epoch": epoch, "train_loss": total / len(y),
                        "test_acc": _accuracy(_predict(model, data["test_x"]), data["test_y"])})
    predicted = _predict(model, data["test_x"])
    matrix = confusion_matrix(data["test_y"], predicted)
    return {
        "augmentation": augmentation, "p": p, "seed": seed, "epochs_run": epochs, "lr": lr,
        "batch_size": batch_size,
        "test_acc": _accuracy(predicted, data["test_y"]),
        "epochs": history, "confusion": matrix, **confusion_6_9(matrix),
        "num_params": sum(q.numel() for q in model.parameters()),
        "seconds": time.perf_counter() - start,
    }
