"""Shared fixtures: a small generated CIFAR-10 in the standard layout (never the real set)."""
import pytest

from analysis import paths
from analysis.data import load_cifar10, write_fake_cifar10


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Decoded-data caches go to a temporary folder, never the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv(paths.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory):
    """A folder holding cifar-10-batches-py/ with 1,000 training and 200 test images."""
    return write_fake_cifar10(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def fake_data(fake_data_dir):
    """The generated set loaded: 900 train, 100 validation, 200 test images."""
    return load_cifar10(fake_data_dir)
