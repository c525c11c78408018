"""The results folder's protocol: how a run claims its key, is built, and becomes visible.

- A lock per key (flock, released by the OS if the process dies) stops two processes from
  running the same run: the second waits, then finds it done (or failed there, and runs it).
- A run is built in `runs/.tmp-<key>-...` and becomes `runs/<key>` by one atomic rename
  once its status record is written, so a half-written run is never mistaken for a finished
  one; a killed runner leaves only a `.tmp-` folder, swept on the next start.
- Finished and diverged runs are done (`results.DONE`); a failed one runs again next time.
- `index/<profile>.json` lists the runs a profile's plan needs: the book reads it, not the plan.
"""
import contextlib
import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

from analysis.artifacts import read_json, write
from analysis.results import DONE


@contextlib.contextmanager
def lock(results: Path, key: str, wait: bool = False):
    """Yield True once this process holds the run's lock; False if another process holds
    it and `wait` is False (with `wait`, block until that process lets go)."""
    lock_dir = Path(results) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{key}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_done(results: Path, key: str) -> bool:
    return read_json(Path(results) / "runs" / key / "status.json").get("status") in DONE


@contextlib.contextmanager
def claim(results: Path, run, force: bool = False):
    """Hold `run`'s lock (a plan.Run) and yield a fresh temporary folder holding its params,
    or None when the run is done already (and not forced). Another runner on the same
    results may hold the run: this waits for it, and then the run is usually done."""
    with lock(results, run.key, wait=True):
        if is_done(results, run.key) and not force:
            yield None
            return
        tmp = Path(results) / "runs" / f".tmp-{run.key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        write(tmp, "params", run.record())
        yield tmp


def publish(tmp: Path, final: Path) -> None:
    """Make the run visible in one rename; an older copy (failed or forced) moves aside first."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def sweep(results: Path) -> int:
    """Remove leftovers of killed runners (their locks are free); return how many."""
    runs_dir = Path(results) / "runs"
    if not runs_dir.exists():
        return 0
    removed = 0
    for d in runs_dir.glob(".*-*"):
        key = d.name.split("-")[1]
        with lock(results, key) as mine:
            if mine:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    return removed


def write_index(results: Path, profile: str, runs: list) -> None:
    """Record which runs the profile's plan needs; the book reads this, not the plan."""
    index = Path(results) / "index"
    index.mkdir(parents=True, exist_ok=True)
    tmp = index / f".{profile}.json.{os.getpid()}"
    tmp.write_text(json.dumps([r.record() for r in runs], indent=1, sort_keys=True))
    tmp.replace(index / f"{profile}.json")
