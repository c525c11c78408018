"""Execute the plan's runs with papermill, locally or on a Dask cluster, with a cache.

Guarantees:
- A run is built in `runs/.tmp-<key>-...` and becomes `runs/<key>` by one atomic
  rename after its status record is written, so a half-written run is never
  mistaken for a finished one; a killed runner leaves only a `.tmp-` folder,
  swept on the next start.
- A lock per key (flock, released by the OS if the process dies) stops two
  processes from running the same run: the second waits, then finds it cached.
- Ctrl-C stops the batch: queued runs are cancelled and running ones killed (their
  kernels exit with them); finished runs are kept and a rerun resumes.
- A failed run records its traceback under its key and the batch goes on;
  finished and diverged runs are cached, failed ones are retried next time.
- Runs the plan marks `exclusive` run one at a time with nothing else of the batch
  running (locally and on Dask), before the others; the others start longest first.
- Kernels get their CPU threads through their environment (OMP_NUM_THREADS); local
  parallel runs share the cores, and as a batch winds down the runs still going are told
  (a hint file, see `train.follow_thread_hint`) to take the threads of finished ones.
"""
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from analysis import paths, plan
from analysis.data import FOLDER
from analysis.results import DONE, read_json, write
from analysis.train import THREADS_FILE_ENV

LIBRARIES = ("torch", "torchvision", "numpy", "pandas", "papermill", "fvcore")


class SchedulerUnreachable(RuntimeError):
    """--dask named a scheduler that cannot be reached."""


@dataclass
class Outcome:
    key: str
    status: str  # finished | diverged | failed | cached
    seconds: float = 0.0
    error: str | None = None
    experiments: tuple = ()


# ---------------------------------------------------------------- data identity

def data_fingerprint(data_root: Path) -> str:
    """Identity of the dataset files: a hash of every file's name and full contents.

    Part of every run key, so results from generated smoke data are never reused for
    the real CIFAR-10, for another copy of it, or for a copy edited in place. (Reading
    the 180 MB takes about half a second; a partial hash would miss edited labels.)
    """
    folder = Path(data_root) / FOLDER
    if not folder.is_dir():
        return "absent"
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            h.update(f"{f.name}:{_sha256(f)}".encode())
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    """A file's SHA-256, read once per process and version of the file."""
    st = path.stat()
    return _read_sha256(path.resolve(), st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.cache
def _read_sha256(path: Path, size: int, mtime_ns: int, ctime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def data_identity(data_root: Path) -> dict:
    """What a run records about its data: the fingerprint in its key, and whether the pixels
    are the official CIFAR-10 ones (hashes of the decoded arrays, `data.is_official`).

    Published accuracies were measured on the official pixels; a re-encoded copy (a JPEG
    one, say) trains the same code to different numbers, so runs record which they saw.
    """
    from analysis import data

    pixels = data.pixel_hashes(data_root)
    return {"fingerprint": data_fingerprint(data_root), "pixels_sha256": pixels,
            "official": pixels == data.OFFICIAL_PIXELS}


def ensure_data(data_root: Path, explicit: bool, download: bool = True) -> None:
    """Find (or download) CIFAR-10 before any run starts, so a missing dataset fails fast.

    A folder the user named (flag or environment) must exist: a typo should not start a
    170 MB download into a new folder."""
    from analysis import data

    if explicit and not data_root.exists():
        raise FileNotFoundError(
            f"data folder {data_root} does not exist. Point --data-dir or {paths.DATA_ENV} at "
            f"the folder holding {FOLDER}/, or create the folder to download CIFAR-10 into it.")
    data.load_cifar10(data_root, download=download)


# ---------------------------------------------------------------- one run

def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        with contextlib.suppress(PackageNotFoundError):
            out[lib] = version(lib)
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.PROJECT_ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") or None
    except (OSError, subprocess.SubprocessError):
        return None


def _device(used: str | None = None) -> str:
    """The hardware a run used: the notebook's own report for a GPU, this host's CPU otherwise."""
    if used and not used.startswith("cpu"):
        return used
    if used is None:
        import torch

        if torch.cuda.is_available():
            return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


@contextlib.contextmanager
def _lock(results: Path, key: str, wait: bool = False):
    """Yield True once this process holds the run's lock; False if another process holds
    it and `wait` is False (with `wait`, block until that process lets go)."""
    lock_dir = results / "locks"
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
    return read_json(results / "runs" / key / "status.json").get("status") in DONE


def execute(run: dict, results: Path, data_root: Path, force: bool = False,
            experiments_dir: Path = paths.EXPERIMENTS_DIR, threads: int | None = None,
            threads_file: Path | None = None) -> Outcome:
    """Run one notebook (a plan.Run record) into results/runs/<key>; never raises.

    `threads`: the CPU threads the runner gives a run the plan gives none (see
    `kernel_threads`); `threads_file`: a file the kernel rereads for that number each epoch.
    """
    import papermill

    results, key = Path(results), run["key"]
    final = results / "runs" / key
    experiments = tuple(run["experiments"])
    # Another runner on the same results may hold this run: wait for it, then the run is
    # usually cached (or failed there, and is retried here).
    with _lock(results, key, wait=True):
        if is_done(results, key) and not force:
            return Outcome(key, "cached", experiments=experiments)
        tmp = results / "runs" / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        write(tmp, "params", run)
        start = time.time()
        status = {"key": key, "started": _now(), "host": socket.gethostname(),
                  "versions": _versions(), "git_commit": _git_commit(),
                  "data": data_identity(data_root)}
        try:
            papermill.execute_notebook(
                str(Path(experiments_dir) / run["notebook"]), str(tmp / "notebook.ipynb"),
                parameters={**run["params"], "run_dir": str(tmp), "data_dir": str(data_root)},
                cwd=str(paths.PROJECT_ROOT), kernel_name="python3", progress_bar=False,
                kernel_manager_class=_kernel_manager(_kernel_env(run, threads, threads_file)),
                # The kernel's start-up warnings would drown the progress bar, and so would
                # the "KeyboardInterrupt caught in kernel" ERROR that ipykernel logs when
                # jupyter_client's shutdown interrupts it; cell errors still reach papermill.
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
            summary = read_json(tmp / "summary.json")
            status.update(status=summary.get("status", "finished"), error=None,
                          device=_device(summary.get("device")))
            if summary.get("diverged_at"):
                d = summary["diverged_at"]
                status["error"] = f"loss became non-finite at epoch {d['epoch']}, step {d['step']}"
        except Exception as e:  # noqa: BLE001 - a failed run is a result, the batch goes on
            status.update(status="failed", error=_last_line(e), traceback=traceback.format_exc(),
                          device=_device())
        status.update(finished=_now(), seconds=round(time.time() - start, 3))
        write(tmp, "status", status)
        _publish(tmp, final)
        return Outcome(key, status["status"], status["seconds"], status.get("error"), experiments)


def kernel_threads(run: dict, share: int | None = None) -> int | None:
    """The CPU threads a run's kernel gets (None: it inherits this process's setting).

    In order: the plan's `threads`; every core of this machine for an exclusive run (the
    machine is its own, whatever OMP_NUM_THREADS says: a Dask worker sets it to 1); the
    user's OMP_NUM_THREADS, which a share the runner chose never overrides; else `share`.
    """
    if run.get("threads"):
        return run["threads"]
    if run.get("exclusive"):
        return os.cpu_count() or 1
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return share


def _shares_cores(run: dict) -> bool:
    """Whether the runner may change a run's threads while it runs (see `kernel_threads`)."""
    return not (run.get("threads") or run.get("exclusive") or os.environ.get("OMP_NUM_THREADS"))


def _kernel_env(run: dict, share: int | None, threads_file: Path | None) -> dict:
    threads = kernel_threads(run, share)
    env = {} if threads is None else {"OMP_NUM_THREADS": str(threads)}
    if threads_file is not None:
        env[THREADS_FILE_ENV] = str(threads_file)
    return env


def _kernel_manager(env: dict):
    """A kernel manager class whose kernels see `env` on top of this process's environment.

    Handed to the kernel rather than set in os.environ, as a Dask worker runs several runs
    in threads of one process, each with its own thread count."""
    from jupyter_client import AsyncKernelManager  # nbclient's default kernel manager

    class KernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**kw.get("env", os.environ), **env}
            return await super().start_kernel(**kw)

    return KernelManager


def _last_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:500]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _publish(tmp: Path, final: Path) -> None:
    """Make the run visible in one rename; an older copy (failed or forced) moves aside first."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def sweep_stale(results: Path) -> int:
    """Remove leftovers of killed runners (their locks are free); return how many."""
    runs_dir = Path(results) / "runs"
    if not runs_dir.exists():
        return 0
    removed = 0
    for d in runs_dir.glob(".*-*"):
        key = d.name.split("-")[1]
        with _lock(Path(results), key) as mine:
            if mine:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    return removed


# ---------------------------------------------------------------- the batch

def write_index(results: Path, profile: str, runs: list) -> None:
    """Record which runs the profile's plan needs; the book reads this, not the plan."""
    index = Path(results) / "index"
    index.mkdir(parents=True, exist_ok=True)
    tmp = index / f".{profile}.json.{os.getpid()}"
    tmp.write_text(json.dumps([r.record() for r in runs], indent=1, sort_keys=True))
    tmp.replace(index / f"{profile}.json")


def prepare(profile: str | None, data_dir=None, results_dir=None, only=None, seeds=None,
            download: bool = True):
    """Validate everything a batch needs before any compute: plan, profile, data."""
    the_plan = plan.load()
    profile = plan.resolve_profile(profile)
    wanted = set(plan.select(the_plan, only))  # an unknown --only fails before the data check
    data_root = paths.data_dir(data_dir)
    results = paths.results_dir(results_dir)
    ensure_data(data_root, explicit=bool(data_dir or os.environ.get(paths.DATA_ENV)),
                download=download)
    all_runs = plan.expand(the_plan, profile, data_fingerprint(data_root))
    selected = [r for r in all_runs if wanted & set(r.experiments)]
    if seeds is not None:
        planned = sorted({r.params.get("seed") for r in selected})
        unknown = sorted(set(seeds) - set(planned))
        if unknown:
            raise ValueError(f"--seeds {' '.join(map(str, unknown))}: not among the seeds the "
                             f"{profile} profile plans for these runs ({planned})")
        selected = [r for r in selected if r.params.get("seed") in seeds]
    return profile, data_root, results, all_runs, selected


def run_batch(runs: list, results: Path, data_root: Path, *, jobs: int = 1, force=False,
              dask_address: str | None = None, progress=True,
              experiments_dir: Path = paths.EXPERIMENTS_DIR) -> list[Outcome]:
    """Execute runs (skipping finished ones) with a progress bar; return one Outcome each.

    Exclusive runs go first, one at a time, with nothing else of the batch running; then
    the others, longest first (`plan.dispatch_order`).
    """
    from tqdm.auto import tqdm

    results.mkdir(parents=True, exist_ok=True)
    sweep_stale(results)
    ordered = plan.dispatch_order(runs)
    exclusive = [r.record() for r in ordered if r.exclusive]
    shared = [r.record() for r in ordered if not r.exclusive]
    todo = exclusive + shared
    # A bar on a terminal; in a log (quarto's pre-render, CI) one line per run instead.
    live = progress and sys.stderr.isatty()
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not live)
    outcomes = []
    names = plan.labels(runs)
    eta = TimeLeft({r["key"]: plan.expected_cost(r["notebook"], r["params"]) for r in todo})

    def done(outcome: Outcome):
        outcomes.append(outcome)
        what = f"{names.get(outcome.key, ','.join(outcome.experiments))} {outcome.status}"
        left = eta.done(outcome.key, cached=outcome.status == "cached")
        bar.update(1)
        bar.set_postfix_str(f"{left}; last: {what}", refresh=False)
        if progress and not live and outcome.status != "cached":
            print(f"[{len(outcomes)}/{len(todo)}] {what} ({outcome.seconds:.0f} s; {left})",
                  file=sys.stderr, flush=True)

    if dask_address:
        from dask.distributed import Client, as_completed

        try:
            client = Client(dask_address, timeout="10s")
        except (OSError, ValueError, TimeoutError) as e:
            raise SchedulerUnreachable(
                f"cannot reach a Dask scheduler at {dask_address!r} ({e}); give its address "
                "as tcp://HOST:PORT (`dask scheduler` prints it), or drop --dask to run "
                "here") from None
        with client:
            # Each exclusive run is submitted alone and awaited before anything else is
            # submitted: the runner cannot see the workers, only what it submitted itself.
            for r in exclusive:
                done(client.submit(execute, r, results, data_root, force, experiments_dir,
                                   pure=False).result())
            futures = [client.submit(execute, r, results, data_root, force, experiments_dir,
                                     pure=False)
                       for r in shared]
            for fut in as_completed(futures):
                done(fut.result())
    elif jobs > 1:
        # A barrier: the exclusive runs first, one at a time, then the rest in parallel.
        # Simpler than holding slots empty mid-batch, and first rather than last so a
        # latency measurement is not left waiting behind the batch's longest run; the idle
        # slots cost little, as the runs that measure latency are short.
        _in_processes(exclusive, 1, done, (results, data_root, force, experiments_dir))
        _in_processes(shared, jobs, done, (results, data_root, force, experiments_dir))
    else:
        for r in todo:
            done(execute(r, results, data_root, force, experiments_dir))
    bar.close()
    return outcomes


class TimeLeft:
    """Estimated time left in a batch, from the plan's cost estimates (`plan.expected_cost`)
    and the pace of the runs executed so far: elapsed x (cost left / cost done). A run's
    fixed cost (kernel, imports, data) counts as FIXED_COST multiply-accumulates, so that
    runs of no training cost (0 epochs, cost tables) still count."""

    FIXED_COST = 2e10  # roughly what a LeNet-5 run trains in its fixed ~5 s on one core

    def __init__(self, costs: dict[str, float]):
        self.left = {key: cost + self.FIXED_COST for key, cost in costs.items()}
        self.spent = 0.0
        self.start = time.time()

    def done(self, key: str, cached: bool = False) -> str:
        cost = self.left.pop(key, 0.0)
        if not cached:  # a cached run took no time: it is no work left, nor any pace
            self.spent += cost
        return self.text()

    def seconds(self) -> float | None:
        if not self.spent:
            return None
        return (time.time() - self.start) * sum(self.left.values()) / self.spent

    def text(self) -> str:
        s = self.seconds()
        if not self.left:
            return "done"
        return "time left unknown yet" if s is None else f"about {_duration(s)} left"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _in_processes(todo: list[dict], jobs: int, done, args: tuple) -> None:
    """Execute runs in up to `jobs` child processes, reporting each Outcome to `done`.

    Processes, not threads, so that Ctrl-C can stop runs in flight: the children ignore
    SIGINT, and on any interruption the parent kills them (their kernels notice their
    parent is gone and exit); a killed run leaves only its `.tmp-` folder, swept next time.
    Runs whose threads the runner chooses get `thread_share` of the cores at start, and a
    hint file that is rewritten as the batch winds down (`train.follow_thread_hint`).
    """
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")  # no re-import of the caller's __main__
    cpus = os.cpu_count() or 1
    pending, running = list(todo), {}
    try:
        while pending or running:
            starting = pending[:jobs - len(running)]
            del pending[:len(starting)]
            share = thread_share(cpus, jobs, len(running) + len(starting), len(pending))
            for run in starting:
                hint = _threads_file(args[0], run) if _shares_cores(run) else None
                if hint:
                    _write_threads(hint, share)
                reader, writer = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_child, args=(writer, run, *args, share, hint),
                                      daemon=True)
                process.start()
                writer.close()
                running[reader] = (process, run, hint)
            if not pending:  # the batch winds down: finished runs' threads to the rest
                for _, _, hint in running.values():
                    if hint:
                        _write_threads(hint, share)
            for reader in wait(list(running)):
                process, run, hint = running.pop(reader)
                try:
                    outcome = reader.recv()
                except EOFError:  # killed, or out of memory: only this run fails
                    outcome = None
                process.join()
                if hint:
                    hint.unlink(missing_ok=True)
                done(outcome or Outcome(
                    run["key"], "failed", experiments=tuple(run["experiments"]),
                    error=f"runner process died (exit code {process.exitcode})"))
    finally:
        for process, _, _ in running.values():
            process.terminate()
        for process, _, hint in running.values():
            process.join(timeout=10)
            if hint:
                hint.unlink(missing_ok=True)


def thread_share(cpus: int, jobs: int, running: int, pending: int) -> int:
    """CPU threads for each of `running` local runs, while `pending` more wait for a slot.

    While runs wait, every slot is soon busy again: each run gets an even share of the
    cores among `jobs`, also one that starts while others run. Once none waits, the cores
    of finished runs go to the runs still going, down to every core for the last one.
    """
    slots = jobs if pending else min(running, jobs)
    return max(1, cpus // max(1, slots))


def _threads_file(results: Path, run: dict) -> Path:
    # Per runner process too: another runner waiting for the same run must not touch it.
    return Path(results) / "locks" / f"{run['key']}.{os.getpid()}.threads"


def _write_threads(path: Path, threads: int) -> None:
    """Replace the hint in one rename, so the kernel never reads half a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(str(threads))
    tmp.replace(path)


def _child(writer, run, results, data_root, force, experiments_dir, share, hint) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    writer.send(execute(run, results, data_root, force, experiments_dir, share, hint))


def summarize(outcomes: list[Outcome], wall: float, results: Path) -> str:
    counts = {s: sum(o.status == s for o in outcomes)
              for s in ("finished", "cached", "diverged", "failed")}
    ran = counts["finished"] + counts["diverged"] + counts["failed"]
    lines = [f"{len(outcomes)} runs: {ran} executed ({counts['finished']} finished, "
             f"{counts['diverged']} diverged, {counts['failed']} failed), "
             f"{counts['cached']} cached; wall time {wall:.1f} s"]
    for o in outcomes:
        if o.status == "failed":
            lines.append(f"  FAILED {o.key} ({', '.join(o.experiments)}): {o.error}\n"
                         f"    see {results / 'runs' / o.key / 'notebook.ipynb'}")
    return "\n".join(lines)


def status_rows(results: Path, runs: list) -> list[dict]:
    """Per planned run: cached (finished/diverged), failed, missing; and stale runs on disk
    (same notebook and parameters under another key: code, notebook or data changed)."""
    planned = {r.key for r in runs}
    by_params = {}
    runs_dir = results / "runs"
    if runs_dir.exists():
        for d in runs_dir.iterdir():
            if d.name.startswith(".") or d.name in planned:
                continue
            p = read_json(d / "params.json")
            if p:
                same = (p.get("notebook"), json.dumps(p.get("params"), sort_keys=True))
                by_params.setdefault(same, []).append(d.name)
    rows = []
    names = plan.labels(runs)
    for r in runs:
        record = read_json(results / "runs" / r.key / "status.json")
        st = record.get("status")
        state = "cached" if st in DONE else ("failed" if st == "failed" else "missing")
        stale = by_params.get((r.notebook, json.dumps(r.params, sort_keys=True)), [])
        rows.append({"key": r.key, "run": names[r.key], "experiments": ",".join(r.experiments),
                     "state": state,
                     "result": st or "", "stale": len(stale), "seed": r.params.get("seed"),
                     "error": record.get("error") if st == "failed" else None})
    return rows


def cli(args) -> int:
    name = f"dlbook {args.command}"
    try:
        profile, data_root, results, all_runs, selected = prepare(
            args.profile, args.data_dir, args.results, args.only, getattr(args, "seeds", None),
            download=args.command == "run")
    except (plan.PlanError, FileNotFoundError, ValueError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    if args.command == "status":
        print_status(status_rows(results, selected), profile, results)
        return 0
    print(f"dlbook run: profile {profile}, {len(selected)} runs, data {data_root}, "
          f"results {results}", file=sys.stderr)
    if args.dask and args.jobs > 1:
        print(f"{name}: --jobs is ignored with --dask: the cluster's workers set how many "
              "runs execute at once", file=sys.stderr)
    start = time.time()
    try:
        write_index(results, profile, all_runs)
        outcomes = run_batch(selected, results, data_root, jobs=args.jobs, force=args.force,
                             dask_address=args.dask, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; finished runs are kept, and running the same command "
              "again resumes with the rest", file=sys.stderr)
        return 130
    except SchedulerUnreachable as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{name}: cannot write the results folder {results}: {e}\n"
              f"Choose a writable folder with --results DIR or {paths.RESULTS_ENV}=DIR.",
              file=sys.stderr)
        return 2
    print(summarize(outcomes, time.time() - start, results))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def print_status(rows: list[dict], profile: str, results: Path) -> None:
    print(f"profile {profile}: {len(rows)} runs planned, results in {results}")
    width = max([len(r["run"]) for r in rows] + [3])
    print(f"{'run':{width}s} {'key':16s} {'state':8s} {'result':9s} stale")
    for row in sorted(rows, key=lambda r: r["run"]):
        print(f"{row['run']:{width}s} {row['key']} {row['state']:8s} "
              f"{row['result']:9s} {row['stale'] or ''}")
        if row["error"]:
            print(f"{'':{width + 18}s}error: {row['error']}")
    states = [r["state"] for r in rows]
    print(f"cached {states.count('cached')}, missing {states.count('missing')}, "
          f"failed {states.count('failed')}, stale {sum(r['stale'] > 0 for r in rows)}")
