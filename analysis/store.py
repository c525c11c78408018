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
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from analysis import paths
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

# ---------------------------------------------------------------- the book's frozen chapters

def book_inputs(root: Path, results: Path, profile: str) -> str:
    """A fingerprint of everything a chapter's output depends on besides its own text, which
    Quarto's `freeze` already watches: the profile, the runs it reads (the index and each
    run's status, which changes whenever the run is executed again), and the code and data
    files the chapters import or read (analysis/, book/*.yml, the plan, the bibliography)."""
    digest = hashlib.sha256(profile.encode())
    index = Path(results) / "index" / f"{profile}.json"
    files = [index] if index.is_file() else []
    if files:
        files += [Path(results) / "runs" / r["key"] / "status.json"
                  for r in json.loads(index.read_text())]
    files += sorted((Path(root) / "analysis").rglob("*.py"))
    files += sorted((Path(root) / "book").glob("*.yml"))
    files += [Path(root) / paths.PLAN_FILE, Path(root) / "references.bib"]
    for path in files:
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name)
                      .encode())
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    return digest.hexdigest()


def thaw(freeze_dir: Path, root: Path, results: Path, profile: str) -> bool:
    """Empty Quarto's freeze folder when the book's inputs changed since it was filled (the
    fingerprint is kept beside the results), so that `freeze: auto` re-executes a chapter
    whose results or code changed, and nothing else. True if it emptied the folder."""
    freeze_dir = Path(freeze_dir)
    stamp = Path(results) / f"book-inputs-{profile}.sha256"
    now = book_inputs(root, results, profile)
    emptied = freeze_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != now)
    if emptied:
        shutil.rmtree(freeze_dir)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(now + "\n")
    return emptied
