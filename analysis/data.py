"""CIFAR-10 as uint8 tensors in memory, batched augmentation and normalization.

The training engine keeps every split as one uint8 tensor (on the GPU when it
trains there) and augments whole batches with tensor ops, instead of decoding
and transforming one PIL image at a time; that is where most of its speed over
a DataLoader pipeline comes from.

Splits: 5,000 of the 50,000 official training images are held out as a
validation split (stratified by class, fixed seed) for model selection; the
official 10,000 test images stay the test split and only report.
"""
import functools
import hashlib
import json
import os
import pickle
import uuid
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from analysis.paths import CIFAR10_FOLDER, DATA_ENV, cache_dir, data_dir

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

FOLDER = CIFAR10_FOLDER
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"  # of the archive: downloads are checked against it
# SHA-256 of the official pixels: the uint8 (N, 3072) R,G,B-plane arrays in file order
# (data_batch_1..5 concatenated; test_batch). A copy is "official" when its decoded pixels
# hash to these, whatever its files' md5 sums (pickles differ in file names and encoding).
OFFICIAL_PIXELS = {
    "train": "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111",
    "test": "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
}
CACHE_VERSION = 1  # bump when the decoded cache's layout changes


class DataNotFoundError(FileNotFoundError):
    """CIFAR-10 is missing or incomplete and could not be downloaded."""


@dataclass(frozen=True)
class Cifar10:
    """The three splits: x are uint8 (N, 3, 32, 32), y are int64 (N,).

    `mean` and `std` are per-channel statistics of the train split in [0, 1]
    pixel units, the ones `normalize` uses.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor
    root: Path

    def to(self, device) -> "Cifar10":
        """The same data with every tensor on `device`."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)


def load_cifar10(root=None, *, val_size: int = 5000, seed: int = 0,
                 download: bool = True) -> Cifar10:
    """Load CIFAR-10 from `root/cifar-10-batches-py/`, downloading it there if missing.

    `root` falls back to $DLBOOK_DATA, then ./data (see `analysis.paths.data_dir`).
    The validation split takes `val_size` training images, capped at 10% of the
    training images so that small generated sets still leave 90% to train on;
    it is stratified by class and depends only on `seed`.
    """
    root = data_dir(root)
    folder = root / FOLDER
    if not folder.is_dir():
        if not download:
            raise DataNotFoundError(_missing_message(folder, "it does not exist"))
        _download(root, folder)

    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise DataNotFoundError(_missing_message(
            folder, f"it is incomplete (missing {', '.join(missing)}); "
            "delete it to download it again, or replace it with a complete copy"))

    arrays = decoded(folder)
    x, y, test_x, test_y = (arrays[k] for k in ("train_x", "train_y", "test_x", "test_y"))

    val_size = min(val_size, len(y) // 10)
    if val_size < 1:
        raise ValueError(f"{folder} has {len(y)} training images: too few to hold out "
                         "a validation split (at least 10 needed)")
    val_idx, train_idx = stratified_split(y, val_size, seed)
    train_x = torch.from_numpy(x[train_idx])
    mean, std = channel_stats(train_x)
    return Cifar10(
        train_x=train_x, train_y=torch.from_numpy(y[train_idx]),
        val_x=torch.from_numpy(x[val_idx]), val_y=torch.from_numpy(y[val_idx]),
        test_x=torch.from_numpy(test_x), test_y=torch.from_numpy(test_y),
        classes=_read_classes(folder), mean=mean, std=std, root=root,
    )


def _missing_message(folder: Path, problem: str) -> str:
    return (f"CIFAR-10 not found: looked for {folder}, but {problem}.\n"
            f"Provide it with --data-dir DIR or {DATA_ENV}=DIR, where DIR contains "
            f"{FOLDER}/ (the extracted {URL}), or run once with internet access "
            "to download it there.")


def _download(root: Path, folder: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(URL, download_root=str(root), md5=MD5)
    except Exception as e:  # offline, refused, or a bad archive: all end the same way
        raise DataNotFoundError(_missing_message(
            folder, f"it does not exist and downloading failed ({type(e).__name__}: {e})"
        )) from e


def decoded(folder: Path) -> dict[str, np.ndarray]:
    """The pixels and labels of every split, as arrays: train_x, train_y, test_x, test_y
    (images uint8 (N, 3, 32, 32), labels int64), and the SHA-256 of each split's pixels.

    Unpickling the 180 MB of batches costs most of a second in every run, so the arrays are
    cached once per version of the files (keyed by their paths, sizes and modification
    and change times: an edited or replaced file makes a new key), in one .npz written atomically.
    """
    folder = Path(folder).resolve()
    stamp = [(name, *_stat(folder / name)) for name in (*TRAIN_FILES, TEST_FILE)]
    return _decoded(folder, json.dumps(stamp))


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns  # ctime: no tool sets it back


@functools.lru_cache(maxsize=2)  # a chapter loads the data more than once
def _decoded(folder: Path, stamp: str) -> dict[str, np.ndarray]:
    key = hashlib.sha256(f"{CACHE_VERSION}:{folder}:{stamp}".encode()).hexdigest()[:20]
    path = cache_dir() / f"cifar10-{key}.npz"
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        pass  # absent or damaged: decode again
    parts = [_read_batch(folder / name) for name in TRAIN_FILES]
    arrays = {"train_x": np.concatenate([p[0] for p in parts]),
              "train_y": np.concatenate([p[1] for p in parts])}
    arrays["test_x"], arrays["test_y"] = _read_batch(folder / TEST_FILE)
    for split in ("train", "test"):
        arrays[f"{split}_sha256"] = np.array(pixel_sha256(arrays[f"{split}_x"]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # readers see the whole file or none
    except OSError:
        pass  # an unwritable cache only costs speed
    return arrays


def pixel_sha256(x: np.ndarray) -> str:
    """SHA-256 of uint8 images as the official (N, 3072) R,G,B-plane array, in order."""
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).hexdigest()


def pixel_hashes(root=None) -> dict[str, str] | None:
    """SHA-256 of the train and test pixels of the copy under `root` (see OFFICIAL_PIXELS);
    None when the copy is absent or incomplete."""
    folder = data_dir(root) / FOLDER
    if not all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
        return None
    arrays = decoded(folder)
    return {split: str(arrays[f"{split}_sha256"]) for split in OFFICIAL_PIXELS}


def is_official(root=None) -> bool:
    """Whether the copy under `root` holds the official CIFAR-10 pixels, in the official
    order: its decoded arrays hash to OFFICIAL_PIXELS (file md5 sums are not checked)."""
    return pixel_hashes(root) == OFFICIAL_PIXELS


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one pickled batch file."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch file "
                         f"({type(e).__name__}: {e}); replace it or delete the folder "
                         "to download it again") from e
    if len(x) != len(y):
        raise ValueError(f"{path} has {len(x)} images but {len(y)} labels")
    return x, y


def _read_classes(folder: Path) -> tuple[str, ...]:
    meta = folder / META_FILE
    if not meta.is_file():
        return CIFAR10_CLASSES
    with open(meta, "rb") as f:
        names = pickle.load(f, encoding="bytes")[b"label_names"]
    return tuple(n.decode() for n in names)


def stratified_split(labels: np.ndarray, n_first: int, seed: int) -> tuple[np.ndarray, ...]:
    """Sorted indices of a random class-stratified subset of size `n_first`, and of the rest."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[order]
    # Rank each image within its class as a fraction of the class size; taking
    # the smallest fractions first takes every class in proportion to its size.
    fraction = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(shuffled == c)
        fraction[members] = np.arange(len(members)) / len(members)
    ranked = order[np.argsort(fraction, kind="stable")]
    return np.sort(ranked[:n_first]), np.sort(ranked[n_first:])


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), in [0, 1] pixel units.

    From a histogram of the 256 pixel values per channel: exact, and ten times faster
    than summing float copies of the images.
    """
    values = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1).cpu(), minlength=256).double()
        m = counts @ values / counts.sum()
        mean.append(m)
        std.append((counts @ (values - m) ** 2 / counts.sum()).sqrt())
    return (torch.stack(mean) / 255).float(), (torch.stack(std) / 255).float()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) stored pixel by pixel, each pixel's channels together: the
    layout the engine keeps every split in, since oneDNN's convolutions run faster on it
    and `take`, `augment` and `normalize` keep it without a copy."""
    return x.contiguous(memory_format=torch.channels_last)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C): a view for channels_last images, a copy for others."""
    return x.permute(0, 2, 3, 1).contiguous()


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The images x[index], in x's memory layout: whole images copied at once (indexing a
    channels_last tensor directly gathers it pixel by pixel, ten times slower)."""
    if x.is_contiguous():
        return x.index_select(0, index)
    return _pixels(x).index_select(0, index).permute(0, 3, 1, 2)


class Augmentation(NamedTuple):
    """One batch's random crop offsets and flips: image i is shifted by (top[i] - padding,
    left[i] - padding), then flipped left-right where flip[i], upside down where vflip[i]."""
    padding: int
    top: torch.Tensor  # int64
    left: torch.Tensor  # int64
    flip: torch.Tensor | None  # bool; None: none drawn
    vflip: torch.Tensor | None


def draw_augmentation(n: int, *, crop_padding: int = 0, flip_p: float = 0.0,
                      vflip_p: float = 0.0, generator: torch.Generator | None = None,
                      device=None) -> Augmentation | None:
    """The random draws of `augment` for a batch of n images, on `device`; None when there
    is nothing to draw. From `generator` (drawn on its device, so a CUDA generator keeps the
    draws on the GPU), in a fixed order: crop rows, crop columns, flips, vertical flips."""
    if not (crop_padding > 0 or flip_p > 0 or vflip_p > 0):
        return None
    draw_on = generator.device if generator is not None else device

    def draw(sample, *args):
        return sample(*args, generator=generator, device=draw_on).to(device)

    p = crop_padding
    top = left = torch.full((n,), p, dtype=torch.int64, device=device)  # no shift
    if p > 0:
        top, left = draw(torch.randint, 2 * p + 1, (n,)), draw(torch.randint, 2 * p + 1, (n,))
    flip = draw(torch.rand, n) < flip_p if flip_p > 0 else None
    vflip = draw(torch.rand, n) < vflip_p if vflip_p > 0 else None
    return Augmentation(p, top, left, flip, vflip)


def augment(x: torch.Tensor, *, crop_padding: int = 0, flip_p: float = 0.0,
            vflip_p: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding, then horizontal and vertical flips, on a whole batch.

    Per image, like torchvision's RandomCrop(32, padding=crop_padding),
    RandomHorizontalFlip(flip_p) and RandomVerticalFlip(vflip_p), with the draws of
    `draw_augmentation`. The result is on the device of `x`, in channels_last layout
    (`x` itself when there is nothing to do).
    """
    a = draw_augmentation(len(x), crop_padding=crop_padding, flip_p=flip_p, vflip_p=vflip_p,
                          generator=generator, device=x.device)
    return x if a is None else apply_augmentation(x, a)


def apply_augmentation(x: torch.Tensor, a: Augmentation) -> torch.Tensor:
    """The images x (N, C, H, W) cropped and flipped as `a` says, channels_last."""
    n, c, h, w = x.shape
    p, top, left = a.padding, a.top, a.left
    image = torch.arange(n, device=x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # each output row's source row
    if a.flip is not None:
        # A flipped crop is the window of the flipped padded image at the mirrored offset.
        x = torch.cat([x, x.flip(3)])  # flipped before padding: fewer pixels to move
        image = torch.where(a.flip, image + n, image)
        left = torch.where(a.flip, 2 * p - left, left)
    if a.vflip is not None:
        rows = torch.where(a.vflip[:, None], rows.flip(1), rows)
    pixels = F.pad(_pixels(x), (0, 0, p, p, p, p))  # (n, h, w, c): a row is w * c values
    # Every output row is w * c consecutive values of `pixels`: one index_select picks them
    # all from the view of the run starting at every pixel (per-pixel indexing is several
    # times slower).
    _, padded_h, padded_w, _ = pixels.shape
    starts = (image[:, None] * padded_h + rows) * padded_w + left[:, None]  # first pixels
    runs = pixels.reshape(-1).unfold(0, w * c, c)
    return runs.index_select(0, starts.reshape(-1)).view(n, h, w, c).permute(0, 3, 1, 2)


def normalization(mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel: a uint8 pixel v normalises to shift + v * scale."""
    return 1 / (255 * std), -mean / std


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 (x / 255 - mean) / std, per channel, in x's memory layout."""
    four_d = x.dim() == 4 and not x.is_contiguous()
    layout = torch.channels_last if four_d else torch.contiguous_format
    # Spelled out to one image's full shape, in x's layout: broadcasting along channels and
    # pixels makes the CPU's addcmul several times slower. The uint8 pixels go in as they
    # are (converted as they are read): a float copy of the batch first costs more than the
    # arithmetic. The result is the same to the bit.
    size = (1,) * (x.dim() - 3) + tuple(x.shape[-3:])
    scale, shift = normalization(mean, std)
    scale = scale.to(x.device)[:, None, None].expand(size)
    shift = shift.to(x.device)[:, None, None].expand(size)
    return torch.addcmul(shift.contiguous(memory_format=layout), x,
                         scale.contiguous(memory_format=layout))


def write_fake_cifar10(root, *, n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Path:
    """Write a small learnable CIFAR-10 look-alike under `root/cifar-10-batches-py/`.

    Same files and pickled format as the real set. Each class is a blocky
    coloured pattern (8x8-pixel blocks) plus pixel noise, so LeNet-5 learns it
    in a couple of epochs, also under crops and flips. Returns `root`, the
    folder to pass as --data-dir.
    """
    root = Path(root)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(10, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)

    def images(n):
        labels = rng.permutation(np.arange(n) % 10)
        pixels = 128 + 50 * patterns[labels] + 40 * rng.normal(size=(n, 3, 32, 32))
        data = pixels.clip(0, 255).astype(np.uint8).reshape(n, 3072)
        return data, labels

    def write(name, data, labels, first):
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels.tolist(),
                 b"filenames": [f"fake_{first + i}.png".encode() for i in range(len(labels))]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)

    data, labels = images(n_train)
    first = 0
    for name, part in zip(TRAIN_FILES, np.array_split(np.arange(n_train), 5), strict=True):
        write(name, data[part], labels[part], first)
        first += len(part)
    write(TEST_FILE, *images(n_test), first)
    with open(folder / META_FILE, "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                     b"num_cases_per_batch": n_train // 5, b"num_vis": 3072}, f)
    return root
