"""The one place that decides where data and results live.

Each location is, in order of precedence: an explicit argument (a CLI flag),
an environment variable, a default relative to the current directory (the
project root when the book renders, since `_quarto.yml` sets execute-dir).
"""
import os
from pathlib import Path

DATA_ENV = "DLBOOK_DATA"
RESULTS_ENV = "DLBOOK_RESULTS"
PROFILE_ENV = "DLBOOK_PROFILE"
JOBS_ENV = "DLBOOK_JOBS"
CACHE_ENV = "DLBOOK_CACHE"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The project's files, relative to its root (the checker also reads other roots' copies).
PLAN_FILE = "experiments/plan.yaml"
ANSWERS_FILE = "book/answers.yml"
COURSE_FILE = "book/course.yml"
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"
# The folder CIFAR-10's python archive extracts to, inside the data folder.
CIFAR10_FOLDER = "cifar-10-batches-py"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Folder that holds (or will hold) `cifar-10-batches-py/`. Given that folder itself,
    its parent: the copy is found there, rather than downloaded again inside it."""
    root = Path(explicit or os.environ.get(DATA_ENV) or "data").expanduser().resolve()
    if root.name == CIFAR10_FOLDER and root.is_dir() and not (root / CIFAR10_FOLDER).exists():
        return root.parent
    return root


def results_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Folder that holds `runs/<key>/` for every finished run."""
    return Path(explicit or os.environ.get(RESULTS_ENV) or "results").expanduser().resolve()


def cache_dir() -> Path:
    """Folder for caches that only save time (decoded data): $DLBOOK_CACHE, else
    $XDG_CACHE_HOME/dlbook, else ~/.cache/dlbook. Deleting it is always safe."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dlbook"
