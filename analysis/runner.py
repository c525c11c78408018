"""Execute the plan's runs with papermill, locally or on a Dask cluster, with a cache.

Guarantees (the results folder's own, locks and atomic publication, are in store.py; the
kernels' threads and warm kernels in kernels.py):
- Ctrl-C stops the batch: queued runs are cancelled and running ones killed (the
  local worker processes are killed, and their kernels exit with them); finished runs
  are kept and a rerun resumes.
- A failed run records its traceback under its key and the batch goes on;
  finished and diverged runs are cached, failed ones are retried next time.
- Local runs reuse warm kernels: each job slot is a worker process that keeps one kernel
  across its runs (`kernels.WarmKernel`). Runs whose threads the plan sets get a fresh
  kernel of their own each, and so do runs on Dask.
- Runs the plan marks `exclusive` run one at a time with nothing else of the batch
  running (locally and on Dask), before the others; the others start longest first, each
  on the first free slot.
- A run that needs others (`needs` in the plan) starts only once they are finished: locally
  the first waiting run whose needs are done takes the next free slot (no batch-wide
  barrier); on Dask its task takes theirs as arguments, so the cluster orders them. The
  runs an exclusive run needs run alone before it. If a needed run failed, diverged, or is
  neither in the batch nor finished in the results, the run is not executed: it is
  recorded as failed, saying which run it needs and why, and is retried next time.
- Local parallel runs share the cores, and as a batch winds down the runs still going are
  told (a hint file per slot) to take the threads of finished ones.
"""
import contextlib
import functools
import hashlib
import logging
import os
import platform
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from analysis import kernels, paths, plan, store
from analysis.artifacts import read_json, write
from analysis.data import FOLDER, TEST_FILE, TRAIN_FILES, DataNotFoundError
from analysis.plan import Run
from analysis.results import collapsed

LIBRARIES = ("torch", "torchvision", "numpy", "pandas", "papermill", "fvcore")
TICK = 5.0  # seconds between refreshes of the time left while runs go on


class SchedulerUnreachable(RuntimeError):
    """--dask named a scheduler that cannot be reached."""


@dataclass(frozen=True)
class Settings:
    """Where a batch's runs read and write, and whether runs done already run again."""
    results: Path
    data_root: Path
    force: bool = False
    experiments_dir: Path = paths.EXPERIMENTS_DIR


@dataclass
class Outcome:
    key: str
    status: str  # finished | diverged | failed | cached
    seconds: float = 0.0
    error: str | None = None
    experiments: tuple = ()
    best_val_acc: float | None = None  # a training run's, from its summary

    @property
    def verdict(self) -> str:
        """Its status, or "collapsed" for a finished run that never beat chance (the
        book's rule, `results.collapsed`)."""
        return "collapsed" if self.status == "finished" and collapsed(self.best_val_acc) \
            else self.status


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

    return {"fingerprint": data_fingerprint(data_root),
            "pixels_sha256": data.pixel_hashes(data_root),  # decoded once, cached
            "official": data.is_official(data_root)}


def ensure_data(data_root: Path, explicit: bool, download: bool = True) -> None:
    """Find (or download) CIFAR-10 before any run starts, so a missing dataset fails fast.

    A folder the user named (flag or environment) must exist: a typo should not start a
    170 MB download into a new folder. Without `download` (`dlbook status`) the files only
    need to be there: nothing is downloaded or decoded, and a missing copy gets one line."""
    from analysis import data

    if explicit and not data_root.exists():
        raise FileNotFoundError(
            f"data folder {data_root} does not exist. Point --data-dir or {paths.DATA_ENV} at "
            f"the folder holding {FOLDER}/, or create the folder to download CIFAR-10 into it.")
    if download:
        data.load_cifar10(data_root, download=True)
        return
    folder = data_root / FOLDER
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        problem = "is not there" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise DataNotFoundError(
            f"no CIFAR-10 in {data_root} ({FOLDER}/ {problem}); every run's key includes the "
            f"data's fingerprint, so this needs the data: point --data-dir or "
            f"{paths.DATA_ENV} at the folder holding {FOLDER}/ (`dlbook run` downloads it "
            "into ./data)")


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


def execute(run: Run, settings: Settings, threads: int | None = None,
            threads_file: Path | None = None,
            kernel: "kernels.WarmKernel | None" = None) -> Outcome:
    """Run one notebook into results/runs/<key>; never raises.

    `threads`: the CPU threads the runner gives a run the plan gives none (see
    `kernels.kernel_threads`); `threads_file`: a file the kernel rereads for that number
    each epoch. `kernel`: a job slot's warm kernel to run in (reset first; replaced if the
    run fails); without one, papermill starts a fresh kernel for the run and shuts it down.
    """
    import papermill

    results = settings.results
    with store.claim(results, run, settings.force) as tmp:
        if tmp is None:
            return Outcome(run.key, "cached", experiments=tuple(run.experiments))
        start = time.time()
        status = {"key": run.key, "started": _now(), "host": socket.gethostname(),
                  "versions": _versions(), "git_commit": _git_commit(),
                  "data": data_identity(settings.data_root)}
        env = kernels.kernel_env(run, threads, threads_file)
        _quiet_runner_params()
        summary = {}
        try:
            if kernel is None:
                # The kernel's start-up warnings would drown the progress bar, and so would
                # the "KeyboardInterrupt caught in kernel" ERROR that ipykernel logs when
                # jupyter_client's shutdown interrupts it; cell errors still reach papermill.
                where = {"kernel_manager_class": kernels.kernel_manager(env),
                         "extra_arguments": kernels.KERNEL_ARGUMENTS}
                status["kernel"] = {"pid": None, "earlier_runs": 0}
            else:
                # papermill hands `km` to nbclient, which neither starts nor shuts down a
                # kernel it is given (NotebookClient.setup_kernel: `km.has_kernel`).
                where = {"km": kernel.ready(env)}
                status["kernel"] = {"pid": kernel.pid, "earlier_runs": kernel.runs - 1}
            papermill.execute_notebook(
                str(Path(settings.experiments_dir) / run.notebook), str(tmp / "notebook.ipynb"),
                parameters={**run.params, "run_dir": str(tmp),
                            "data_dir": str(settings.data_root),
                            "results_dir": str(results.resolve())},
                cwd=str(paths.PROJECT_ROOT), kernel_name="python3", progress_bar=False, **where)
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
        store.publish(tmp, results / "runs" / run.key)
        if kernel is not None:
            kernel.finished(ok=status["status"] != "failed")
        return Outcome(run.key, status["status"], status["seconds"], status.get("error"),
                       tuple(run.experiments), summary.get("best_val_acc"))


def unmet_needs(run: Run, results: Path, outcomes: dict | None = None) -> list[tuple]:
    """The runs `run` needs that are not finished, as (key, state, error): state failed,
    diverged, or None where no record says (not run yet, or running).

    `outcomes`: this batch's Outcome of each needed run that has one (a failure that left
    no record, such as a dead worker, is known from it); the others are read from their
    status.json.
    """
    unmet = []
    for key in run.needs:
        outcome = (outcomes or {}).get(key)
        if outcome is not None and outcome.status in ("failed", "diverged"):
            state, error = outcome.status, outcome.error
        else:
            record = read_json(Path(results) / "runs" / key / "status.json")
            state, error = record.get("status"), record.get("error")
        if state != "finished":
            unmet.append((key, state, error))
    return unmet


def unmet_need(run: Run, results: Path, outcomes: dict, names: dict) -> str | None:
    """Why `run` cannot start (see `unmet_needs`), or None when every run it needs is
    finished; `names`: the needed runs' labels, for the message."""
    unmet = unmet_needs(run, results, outcomes)
    if not unmet:
        return None
    key, state, error = unmet[0]
    which = f"run {key}" + (f" ({names[key]})" if names.get(key) else "")
    if state is None:
        return (f"needs {which}, which is neither in this batch nor finished under {results}; "
                f"run `dlbook run --only {run.experiments[0]}`, which runs it first")
    return f"needs {which}, which {state}: {error}; fix that run and run again"


def fail_unmet(run: Run, settings: Settings, problem: str) -> Outcome:
    """Record `run` as failed without executing it (`problem`: its `unmet_need`), so that
    `dlbook status` says why and the next batch retries it. A finished copy is kept: the
    run it needed was finished when it ran, and its key still names that run."""
    with store.claim(settings.results, run, settings.force) as tmp:
        if tmp is None:
            return Outcome(run.key, "cached", experiments=tuple(run.experiments))
        write(tmp, "status", {"key": run.key, "started": _now(), "finished": _now(),
                              "seconds": 0.0, "host": socket.gethostname(), "status": "failed",
                              "error": problem, "needs": run.needs})
        store.publish(tmp, settings.results / "runs" / run.key)
    return Outcome(run.key, "failed", 0.0, problem, tuple(run.experiments))


def execute_after(run: Run, names: dict, settings: Settings, *needed: "Outcome | None"
                  ) -> Outcome:
    """`execute` once the runs `run` needs are done, or `fail_unmet` if one is not finished.

    For Dask: `needed` are the Outcomes of `run.needs`, in that order, passed as futures
    so that the cluster starts this task only after theirs (None: a run not in the batch,
    whose record is read from the results). Never raises, like `execute`.
    """
    outcomes = {key: o for key, o in zip(run.needs, needed, strict=True) if o is not None}
    problem = unmet_need(run, settings.results, outcomes, names)
    if problem:
        return fail_unmet(run, settings, problem)
    return execute(run, settings)


class _UndeclaredRunnerParams(logging.Filter):
    """Drops papermill's warning that a notebook does not declare a runner parameter: the
    runner passes all of them (RUNNER_PARAMS) to every notebook, used there or not."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        prefix = "Passed unknown parameter: "
        return not (message.startswith(prefix)
                    and message[len(prefix):] in plan.RUNNER_PARAMS)


def _quiet_runner_params() -> None:
    logger = logging.getLogger("papermill")
    if not any(isinstance(f, _UndeclaredRunnerParams) for f in logger.filters):
        logger.addFilter(_UndeclaredRunnerParams())


def _last_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:500]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the batch

def prepare(profile: str | None, data_dir=None, results_dir=None, only=None, seeds=None, *,
            force: bool = False, download: bool = True
            ) -> tuple[str, Settings, list[Run], list[Run]]:
    """Validate everything a batch needs before any compute: data, plan, profile, --only and
    --seeds. Returns the profile, the batch's Settings, every run of the profile's plan,
    and the runs to execute (the selected ones and the runs they need)."""
    data_root = paths.data_dir(data_dir)
    explicit = bool(data_dir or os.environ.get(paths.DATA_ENV))
    if not download:  # `dlbook status`: without data, say so before reading the plan
        ensure_data(data_root, explicit, download=False)
    the_plan = plan.load()
    profile = plan.resolve_profile(profile)
    wanted = set(plan.select(the_plan, only))  # an unknown --only fails before a download
    if download:
        ensure_data(data_root, explicit)
    all_runs = plan.expand(the_plan, profile, data_fingerprint(data_root))
    selected = [r for r in all_runs if wanted & set(r.experiments)]
    if seeds is not None:
        planned = sorted({r.params.get("seed") for r in selected})
        unknown = sorted(set(seeds) - set(planned))
        if unknown:
            raise ValueError(f"--seeds {' '.join(map(str, unknown))}: not among the seeds the "
                             f"{profile} profile plans for these runs ({planned})")
        selected = [r for r in selected if r.params.get("seed") in seeds]
    # The runs they need come too (trained first, or found cached), whatever --only says.
    selected = plan.with_needs(selected, all_runs)
    settings = Settings(paths.results_dir(results_dir), data_root, force)
    return profile, settings, all_runs, selected


def run_batch(runs: list[Run], settings: Settings, *, jobs: int = 1,
              dask_address: str | None = None, progress: bool = True) -> list[Outcome]:
    """Execute runs (skipping finished ones), showing the progress; one Outcome each.

    Exclusive runs go first, one at a time, with nothing else of the batch running (and the
    runs they need before them); then the others, longest first (`plan.dispatch_order`),
    each once the runs it needs are finished (else it fails, see `unmet_need`).
    """
    from analysis.progress import Progress

    # 1. The results folder swept of killed runs, the runs in the order they start.
    settings.results.mkdir(parents=True, exist_ok=True)
    store.sweep(settings.results)
    ordered = plan.dispatch_order(runs)
    alone = plan.runs_alone(runs)  # the exclusive runs and the runs they need
    first = [r for r in ordered if r.key in alone]
    rest = [r for r in ordered if r.key not in alone]
    # 2. What the batch shows while it runs, and the Outcomes it collects.
    report = Progress(ordered, settings, jobs=1 if dask_address else jobs, alone=alone,
                      show=progress)
    # 3. The runs executed, here or on the cluster.
    try:
        if dask_address:
            _on_dask(dask_address, first, rest, settings, report)
        else:
            # A barrier: the exclusive runs first, one at a time, then the rest in parallel.
            # Simpler than holding slots empty mid-batch, and first rather than last so a
            # latency measurement is not left waiting behind the batch's longest run; the
            # idle slots cost little, as the runs that measure latency are short.
            _in_processes(first, 1, settings, report)
            _in_processes(rest, jobs, settings, report)
    finally:
        report.close()
    return report.outcomes


def _on_dask(address: str, first: list[Run], rest: list[Run], settings: Settings,
             report) -> None:
    """Execute the runs on the Dask scheduler at `address`, reporting to `report`.

    Dask runs get a fresh kernel each: a worker runs several runs at once in threads of one
    process, each with its own event loop and thread count, and a kernel kept per worker
    thread would outlive the batch in the cluster. Each run of `first` (the exclusive ones)
    is submitted alone and awaited before anything else is submitted: the runner cannot see
    the workers, only what it submitted itself. A run's task takes the futures of the runs
    it needs (or their outcomes, when known already): the cluster starts it once they are
    done.
    """
    from dask.distributed import as_completed

    with _dask_client(address) as client:
        futures = {}

        def submit(run: Run):
            needed = [futures.get(k, report.by_key.get(k)) for k in run.needs]
            return client.submit(execute_after, run, {k: report.names.get(k) for k in run.needs},
                                 settings, *needed, pure=False)

        for run in first:
            report.done(submit(run).result())
        for run in rest:  # in dispatch order: a needed run is submitted first
            futures[run.key] = submit(run)
        for future in as_completed(list(futures.values())):
            report.done(future.result())


def _dask_client(address: str):
    """A client of the Dask scheduler at `address`; SchedulerUnreachable if there is none.

    distributed starts a client's event loop in a thread, holding a lock of its own, and
    asserts the loop is up within 10 s; on a busy machine it may not be: once more, then
    fail. A client whose start failed half-way is closed here, at once: left to the garbage
    collector, its close could run inside a later client's start, under that lock, and wait
    on it for ever. Collecting garbage first closes any such client this process made
    elsewhere (a caller's, a test's) before the new client takes the lock.
    """
    import gc

    from dask.distributed import Client

    for attempt in (1, 2):
        gc.collect()
        client = Client.__new__(Client)  # a reference to close, should __init__ fail
        try:
            client.__init__(address, timeout="10s")
            return client
        except AssertionError:
            _close_client(client)
            if attempt == 2:
                raise
        except (OSError, ValueError, TimeoutError) as e:
            _close_client(client)
            raise SchedulerUnreachable(
                f"cannot reach a Dask scheduler at {address!r} ({e}); give its address "
                "as tcp://HOST:PORT (`dask scheduler` prints it), or drop --dask to run "
                "here") from None


def _close_client(client) -> None:
    with contextlib.suppress(Exception):
        client.close()


# ---------------------------------------------------------------- local job slots

def _in_processes(todo: list[Run], jobs: int, settings: Settings, report) -> None:
    """Execute runs in up to `jobs` worker processes, reporting to `report` (a
    `progress.Progress`) as each starts and ends, and every TICK seconds in between.

    Each worker is a job slot that keeps a warm kernel across its runs; the first run in
    `todo` order whose needs are done (none of them waits in `todo` or runs) goes to
    whichever slot is free; while none can start, the batch waits for a running one to end.
    A run whose needs are not met then (`unmet_need`) is recorded as failed, not executed.
    Processes, not threads, so that Ctrl-C can stop runs in flight: the workers ignore
    SIGINT, and on any interruption the parent kills them (their kernels notice their
    parent is gone and exit); a killed run leaves only its `.tmp-` folder, swept next time.
    A worker that dies fails its run only; the next run gets a new worker. With more than
    one job, runs whose threads the runner chooses get `thread_share` of the cores at start,
    and their slot's hint file is rewritten at each run's start and as the batch winds down
    (`train.follow_thread_hint`).
    """
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")  # no re-import of the caller's __main__
    cpus = os.cpu_count() or 1
    sharing = jobs > 1  # one job: the kernel's own default threads, and no hint to follow
    pending, idle, busy, slots = list(todo), [], {}, []
    unresolved = {run.key for run in todo}  # pending or running: their dependents wait
    finished = False
    try:
        while pending or busy:
            starting = []
            while len(busy) + len(starting) < jobs:
                run = next((r for r in pending if not unresolved & set(r.needs)), None)
                if run is None:
                    break
                pending.remove(run)
                problem = unmet_need(run, settings.results, report.by_key, report.names)
                if problem:
                    unresolved.discard(run.key)
                    report.done(fail_unmet(run, settings, problem))
                else:
                    starting.append(run)
            # plan.dispatch_order refused runs that need each other: a run waits for one
            # that is running.
            assert starting or busy or not pending, "runs wait, none runs"
            share = kernels.thread_share(cpus, jobs, len(busy) + len(starting), len(pending))
            for run in starting:
                slot = idle.pop() if idle else None
                if slot is not None and not slot.process.is_alive():  # died while idle
                    slot.retire(slots)
                    slot = None
                slot = slot or _Slot.start(ctx, slots, settings)
                hint = slot.hint if sharing and kernels.shares_cores(run) else None
                if hint:
                    _write_threads(hint, share)
                # Should the worker be gone already, its pipe reads EOF below: the run fails.
                slot.send((run, share if sharing else None, hint))
                busy[slot.conn] = (slot, run, hint)
                report.started(run)
            if not pending:  # the batch winds down: finished runs' threads to the rest
                for _, _, hint in busy.values():
                    if hint:
                        _write_threads(hint, share)
            ready = wait(list(busy), timeout=TICK) if busy else []
            if busy and not ready:
                report.tick()
            for conn in ready:
                slot, run, _ = busy.pop(conn)
                try:
                    outcome = conn.recv()
                except EOFError:  # killed, or out of memory: only this run fails
                    slot.retire(slots)
                    outcome = Outcome(
                        run.key, "failed", experiments=tuple(run.experiments),
                        error=f"runner process died (exit code {slot.process.exitcode})")
                else:
                    idle.append(slot)
                unresolved.discard(run.key)
                report.done(outcome)
        finished = True
    finally:
        for slot in slots:
            if not (finished and slot.send(None)):  # None: shut your kernel down and exit
                slot.process.kill()  # interrupted: at once, whatever it was doing
        for slot in list(slots):
            slot.process.join(timeout=30)
            if slot.process.is_alive():
                slot.process.kill()
            slot.retire(slots)


@dataclass(eq=False)
class _Slot:
    """A worker process of `_in_processes`, the parent's end of its pipe, its hint file."""
    number: int
    process: object
    conn: object
    hint: Path

    @classmethod
    def start(cls, ctx, slots: list, settings: Settings) -> "_Slot":
        number = min(set(range(len(slots) + 1)) - {s.number for s in slots})
        mine, theirs = ctx.Pipe()
        # The child closes its copies of the parent's ends of the pipes (its own and the
        # other workers'), so that every worker reads EOF once the parent is gone.
        inherited = [s.conn for s in slots] + [mine]
        process = ctx.Process(target=_worker, args=(theirs, inherited, settings), daemon=True)
        process.start()
        theirs.close()
        slot = cls(number, process, mine, _threads_file(settings.results, number))
        slots.append(slot)
        return slot

    def send(self, job) -> bool:
        try:
            self.conn.send(job)
            return True
        except OSError:  # the worker is gone
            return False

    def retire(self, slots: list) -> None:
        """Forget a worker that has exited (or been killed)."""
        self.process.join()
        self.conn.close()
        self.hint.unlink(missing_ok=True)
        slots.remove(self)


def _worker(conn, inherited, settings: Settings) -> None:
    """A job slot: execute the runs the parent sends, in one warm kernel, until told to stop
    (None) or the parent is gone."""
    import contextvars
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for c in inherited:
        c.close()
    # A context of its own, so jupyter_core's run_sync makes this process its own event
    # loop rather than reuse one the parent may have made before the fork (its epoll
    # instance would be shared with the parent and the other workers).
    contextvars.Context().run(_serve, conn, settings)


def _serve(conn, settings: Settings) -> None:
    kernel = kernels.WarmKernel()
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:  # the parent is gone
                return
            if job is None:
                return
            run, share, hint = job
            warm = kernels.planned_threads(run) is None  # else a kernel with the plan's threads
            outcome = execute(run, settings, share, hint, kernel=kernel if warm else None)
            try:
                conn.send(outcome)
            except OSError:  # the parent is gone (its run is published all the same)
                return
    finally:
        kernel.close()


def _threads_file(results: Path, slot: int) -> Path:
    # Per runner process too: another runner on the same results must not touch it.
    return Path(results) / "locks" / f"slot{slot}.{os.getpid()}.threads"


def _write_threads(path: Path, threads: int) -> None:
    """Replace the hint in one rename, so the kernel never reads half a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(str(threads))
    tmp.replace(path)
