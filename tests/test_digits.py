"""The digits counter-example (tf-03): the augmentations on hand-made tensors with known
answers, the fixed split, the network's size, and a short deterministic training run."""
import pytest
import torch

from analysis import digits


@pytest.fixture(scope="module")
def data():
    return digits.load()


def grid(n=1, h=2, w=3):
    """n images whose pixels are 0, 1, 2, ... in reading order (image k starts at k*h*w)."""
    return torch.arange(n * h * w, dtype=torch.float32).reshape(n, 1, h, w)


def test_vflip_reverses_the_rows():
    out = digits.augment(grid(), "vflip", p=1.0)
    assert out.tolist() == [[[[3, 4, 5], [0, 1, 2]]]]


def test_rot180_reverses_rows_and_columns():
    out = digits.augment(grid(), "rot180", p=1.0)
    assert out.tolist() == [[[[5, 4, 3], [2, 1, 0]]]]


def test_rot180_of_an_8x8_image_moves_pixel_r_c_to_7_minus_r_7_minus_c():
    x = grid(h=8, w=8)
    out = digits.augment(x, "rot180", p=1.0)
    for r, c in [(0, 0), (0, 7), (2, 5), (7, 1)]:
        assert out[0, 0, 7 - r, 7 - c] == x[0, 0, r, c]


def test_rot180_twice_is_the_identity():
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    once = digits.augment(x, "rot180", p=1.0)
    assert not torch.equal(once, x)
    assert torch.equal(digits.augment(once, "rot180", p=1.0), x)


@pytest.mark.parametrize("name", digits.AUGMENTATIONS)
def test_p_zero_leaves_the_batch_unchanged(name):
    x = grid(n=16)
    assert torch.equal(digits.augment(x, name, p=0.0, generator=torch.Generator()), x)


@pytest.mark.parametrize("name", ["vflip", "rot180"])
def test_p_one_transforms_every_image(name):
    x = grid(n=16)
    dims = (2,) if name == "vflip" else (2, 3)
    assert torch.equal(digits.augment(x, name, p=1.0), x.flip(dims))


def test_none_is_the_identity():
    x = grid(n=4)
    assert torch.equal(digits.augment(x, "none", p=1.0), x)


def test_each_image_is_drawn_independently_and_the_same_seed_gives_the_same_batch():
    x = grid(n=64)
    a = digits.augment(x, "rot180", 0.5, torch.Generator().manual_seed(7))
    b = digits.augment(x, "rot180", 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    rotated = [torch.equal(a[i], x[i].flip((1, 2))) for i in range(len(x))]
    kept = [torch.equal(a[i], x[i]) for i in range(len(x))]
    assert all(r != k for r, k in zip(rotated, kept, strict=True))  # one or the other
    assert 10 < sum(rotated) < 54  # p = 0.5 of 64 images: both outcomes, many of each


def test_an_unknown_augmentation_names_the_allowed_ones():
    with pytest.raises(ValueError, match="hflip.*none, vflip, rot180"):
        digits.augment(grid(), "hflip", p=0.5)
    with pytest.raises(ValueError, match="none, vflip, rot180"):
        digits.train("rotate", seed=0, epochs=1)


def test_p_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        digits.augment(grid(), "vflip", p=1.5)


def test_load_shapes_range_and_split_sizes(data):
    assert data["train_x"].shape == (1347, 1, 8, 8) and data["test_x"].shape == (450, 1, 8, 8)
    assert data["train_y"].shape == (1347,) and data["test_y"].shape == (450,)
    assert data["train_x"].dtype == torch.float32 and data["train_y"].dtype == torch.int64
    for x in (data["train_x"], data["test_x"]):
        assert x.min() == 0 and x.max() == 1  # sklearn's 0..16 scaled, the full range used


def test_split_is_stratified(data):
    # Each class's share of the test split is its share of the whole set (within one image).
    every = torch.cat([data["train_y"], data["test_y"]])
    whole = torch.bincount(every, minlength=10)
    test = torch.bincount(data["test_y"], minlength=10)
    assert (test - whole * 0.25).abs().max() <= 1


def test_split_is_the_same_on_every_call(data):
    again = digits.load()
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(again[key], data[key])


def test_network_size_and_output_shape():
    model = digits.SmallCNN()
    assert sum(p.numel() for p in model.parameters()) == digits.NUM_PARAMS == 9_930
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_confusion_helpers():
    matrix = digits.confusion_matrix(torch.tensor([6, 6, 9, 1]), torch.tensor([9, 6, 6, 1]))
    assert sum(map(sum, matrix)) == 4 and matrix[6][6] == 1 and matrix[1][1] == 1
    assert digits.confusion_6_9(matrix) == {"six_as_nine": 1, "nine_as_six": 1}


def test_train_reports_and_repeats_itself(data):
    torch.set_num_threads(1)
    a = digits.train("rot180", seed=3, epochs=2, data=data)
    b = digits.train("rot180", seed=3, epochs=2, data=data)
    assert {"test_acc", "epochs", "confusion", "six_as_nine", "nine_as_six", "seconds",
            "num_params", "augmentation", "p", "seed"} <= set(a)
    assert [set(e) for e in a["epochs"]] == [{"epoch", "train_loss", "test_acc"}] * 2
    assert len(a["confusion"]) == 10 and all(len(row) == 10 for row in a["confusion"])
    assert sum(map(sum, a["confusion"])) == len(data["test_y"])
    correct = sum(a["confusion"][k][k] for k in range(10))
    assert a["test_acc"] == pytest.approx(correct / len(data["test_y"]))
    assert a["six_as_nine"] == a["confusion"][6][9] and a["nine_as_six"] == a["confusion"][9][6]
    same = ("test_acc", "epochs", "confusion", "six_as_nine", "nine_as_six")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert a["test_acc"] > 0.5  # two epochs already learn most of it: the loop does train
