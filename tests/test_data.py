import pickle
import shutil
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets.utils

from analysis.data import (
    CIFAR10_CLASSES,
    FOLDER,
    DataNotFoundError,
    augment,
    channel_stats,
    channels_last,
    load_cifar10,
    normalize,
    stratified_split,
    take,
)


def test_splits_have_the_documented_shapes_dtypes_and_sizes(fake_data):
    d = fake_data
    for x, y, n in [(d.train_x, d.train_y, 900), (d.val_x, d.val_y, 100),
                    (d.test_x, d.test_y, 200)]:
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        assert set(y.tolist()) == set(range(10))
    assert d.classes == CIFAR10_CLASSES
    assert d.val_y.bincount().tolist() == [10] * 10  # stratified


def test_images_are_read_as_rgb_planes(fake_data, fake_data_dir):
    with open(fake_data_dir / FOLDER / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    first = batch[b"data"][0]
    assert torch.equal(fake_data.test_x[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))
    assert torch.equal(fake_data.test_x[0, 2], torch.from_numpy(first[2048:].reshape(32, 32)))
    assert fake_data.test_y.tolist() == batch[b"labels"]


def test_train_and_validation_partition_the_training_files(fake_data, fake_data_dir):
    rows = []
    for i in range(1, 6):
        with open(fake_data_dir / FOLDER / f"data_batch_{i}", "rb") as f:
            rows += [bytes(r) for r in pickle.load(f, encoding="bytes")[b"data"]]
    split = [bytes(r) for r in torch.cat([fake_data.train_x, fake_data.val_x])
             .reshape(-1, 3072).numpy()]
    assert sorted(split) == sorted(rows)


def test_validation_split_depends_only_on_its_seed(fake_data_dir, fake_data):
    assert torch.equal(load_cifar10(fake_data_dir).val_x, fake_data.val_x)
    assert not torch.equal(load_cifar10(fake_data_dir, seed=1).val_x, fake_data.val_x)


def test_validation_size_is_capped_at_a_tenth_of_the_training_images(fake_data_dir):
    assert len(load_cifar10(fake_data_dir, val_size=50).val_y) == 50
    assert len(load_cifar10(fake_data_dir, val_size=5000).val_y) == 100


def test_mean_and_std_come_from_the_train_split(fake_data):
    x = fake_data.train_x.double() / 255
    assert torch.allclose(fake_data.mean.double(), x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(fake_data.std.double(), x.std((0, 2, 3), correction=0), atol=1e-5)
    assert channel_stats(fake_data.train_x)[0].shape == (3,)


def test_normalize_gives_zero_mean_unit_std_on_the_train_split(fake_data):
    z = normalize(fake_data.train_x, fake_data.mean, fake_data.std)
    assert z.dtype == torch.float32
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-3)


def test_data_dir_comes_from_the_environment(fake_data_dir, monkeypatch):
    monkeypatch.setenv("DLBOOK_DATA", str(fake_data_dir))
    assert load_cifar10().root == fake_data_dir.resolve()


def test_missing_data_says_where_it_looked_and_how_to_provide_it(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_cifar10(tmp_path, download=False)
    message = str(e.value)
    assert str(tmp_path / FOLDER) in message
    assert "--data-dir" in message and "DLBOOK_DATA" in message


def test_failed_download_gives_the_same_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(DataNotFoundError, match="downloading failed") as e:
        load_cifar10(tmp_path)
    assert str(tmp_path / FOLDER) in str(e.value) and "DLBOOK_DATA" in str(e.value)


def test_incomplete_folder_names_the_missing_file(fake_data_dir, tmp_path):
    shutil.copytree(fake_data_dir / FOLDER, tmp_path / FOLDER)
    (tmp_path / FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat(np.arange(4), [400, 300, 200, 100])
    first, rest = stratified_split(labels, 100, seed=0)
    assert np.bincount(labels[first]).tolist() == [40, 30, 20, 10]
    assert sorted(np.concatenate([first, rest]).tolist()) == list(range(1000))


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_augment_without_options_returns_the_batch():
    x = images()
    assert torch.equal(augment(x), x)


def test_crop_is_a_window_of_the_zero_padded_image():
    x = images(32)
    p = 4
    out = augment(x, crop_padding=p, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for original, cropped in zip(padded, out, strict=True):
        windows = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(original[:, dy:dy + 32, dx:dx + 32], cropped)]
        assert windows, "crop is not a window of the padded image"


def test_crop_offsets_cover_every_position():
    p = 2
    white = torch.full((4000, 1, 32, 32), 255, dtype=torch.uint8)
    out = augment(white, crop_padding=p, generator=torch.Generator().manual_seed(0))[:, 0]
    # Black padding on one side reveals each image's offset in the padded image.
    top = p - (out[:, :p, 16] == 0).sum(1) + (out[:, -p:, 16] == 0).sum(1)
    left = p - (out[:, 16, :p] == 0).sum(1) + (out[:, 16, -p:] == 0).sum(1)
    assert set(top.tolist()) == set(range(2 * p + 1))
    assert set(left.tolist()) == set(range(2 * p + 1))
    assert abs(top.float().mean().item() - p) < 0.1


def test_flips_are_flips():
    x = images()
    assert torch.equal(augment(x, flip_p=1.0), x.flip(3))
    assert torch.equal(augment(x, vflip_p=1.0), x.flip(2))


@pytest.mark.parametrize("key", ["flip_p", "vflip_p"])
def test_flip_probability_is_respected(key):
    x = images(4000)
    out = augment(x, **{key: 0.3}, generator=torch.Generator().manual_seed(0))
    dim = 3 if key == "flip_p" else 2
    flipped = (out == x.flip(dim)).flatten(1).all(1)
    unchanged = (out == x).flatten(1).all(1)
    assert (flipped | unchanged).all()
    assert abs(flipped.float().mean().item() - 0.3) < 0.03


def test_augment_is_reproducible_with_a_seeded_generator():
    x = images()

    def run(seed):
        return augment(x, crop_padding=4, flip_p=0.5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize("options", [{"crop_padding": 4}, {"flip_p": 0.5},
                                     {"crop_padding": 3, "flip_p": 0.5, "vflip_p": 0.5}])
def test_augment_gives_the_same_images_in_either_memory_layout(options):
    """The engine keeps its images channels_last; augmenting them must not depend on it."""
    x = images()

    def run(batch):
        return augment(batch, **options, generator=torch.Generator().manual_seed(5))

    out = run(channels_last(x))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, run(x))


def test_take_gathers_images_in_their_layout():
    x = images(20)
    index = torch.tensor([3, 0, 19, 3])
    for layout in (x, channels_last(x)):
        out = take(layout, index)
        assert torch.equal(out, x[index])
        assert out.stride() == take(layout, index[:4]).stride() == layout[:4].stride()


def test_normalize_is_the_same_in_either_layout_and_keeps_it(fake_data):
    x = fake_data.train_x[:50]
    flat = normalize(x, fake_data.mean, fake_data.std)
    last = normalize(channels_last(x), fake_data.mean, fake_data.std)
    assert flat.is_contiguous() and last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(flat, last)
    expected = (x.float() / 255 - fake_data.mean[:, None, None]) / fake_data.std[:, None, None]
    torch.testing.assert_close(flat, expected)


# ---------------------------------------------------------------- pixel identity and cache

def _pixels_from_pickles(folder, names):
    """The official-layout (N, 3072) array straight from the batch files."""
    rows = []
    for name in names:
        with open(folder / name, "rb") as f:
            rows.append(np.asarray(pickle.load(f, encoding="bytes")[b"data"], dtype=np.uint8))
    return np.concatenate(rows)


def test_pixel_hashes_are_sha256_of_the_official_layout(fake_data_dir):
    import hashlib

    from analysis import data

    folder = fake_data_dir / FOLDER
    train = _pixels_from_pickles(folder, data.TRAIN_FILES)
    test = _pixels_from_pickles(folder, [data.TEST_FILE])
    assert data.pixel_hashes(fake_data_dir) == {
        "train": hashlib.sha256(train.tobytes()).hexdigest(),
        "test": hashlib.sha256(test.tobytes()).hexdigest()}


def test_official_means_the_official_pixel_hashes(fake_data_dir, monkeypatch):
    from analysis import data

    # The published values, as the data's README gives them.
    assert data.OFFICIAL_PIXELS["train"].startswith("9d5c2edd")
    assert data.OFFICIAL_PIXELS["test"].startswith("177777c3")
    assert not data.is_official(fake_data_dir)  # generated pixels are not CIFAR-10's
    monkeypatch.setattr(data, "OFFICIAL_PIXELS", data.pixel_hashes(fake_data_dir))
    assert data.is_official(fake_data_dir)
    assert not data.is_official(fake_data_dir.parent / "nowhere")


def test_decoded_arrays_are_cached_and_an_edited_file_is_read_again(tmp_path, monkeypatch):
    from analysis import data, paths

    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    root = data.write_fake_cifar10(tmp_path / "d", n_train=100, n_test=20)
    first = load_cifar10(root)
    cached = list((tmp_path / "cache").glob("cifar10-*.npz"))
    assert len(cached) == 1
    data._decoded.cache_clear()  # a new process: read from the cache file, same arrays
    again = load_cifar10(root)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    # Rewrite one batch with other pixels: a new key, the new pixels, never the stale ones.
    before = data.pixel_hashes(root)
    data.write_fake_cifar10(tmp_path / "d", n_train=100, n_test=20, seed=1)
    assert data.pixel_hashes(root) != before
    assert not torch.equal(load_cifar10(root).test_x, first.test_x)


def test_a_damaged_cache_file_is_ignored(tmp_path, monkeypatch):
    from analysis import data, paths

    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    root = data.write_fake_cifar10(tmp_path / "d", n_train=100, n_test=20)
    good = load_cifar10(root)
    (cached,) = (tmp_path / "cache").glob("cifar10-*.npz")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short, as by a full disk
    data._decoded.cache_clear()
    assert torch.equal(load_cifar10(root).train_x, good.train_x)


def test_channel_stats_match_a_float64_reference():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.double() / 255
    assert torch.allclose(mean.double(), ref.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), ref.std((0, 2, 3), correction=0), atol=1e-6)
