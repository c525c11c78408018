"""Execute the plan's runs with papermill, locally or on a Dask cluster, with a cache.

Guarantees:
- A run is built in `runs/.tmp-<key>-...` and becomes `runs/<key>` by one atomic
  rename after its status record is written, so a half-written run is never
  mistaken for a finished one; a killed runner leaves only a `.tmp-` folder,
  swept on the next start.
- A lock per key (flock, released by the OS if the process dies) stops two
  processes from running the same run: the second waits, then finds it cached.
- Ctrl-C stops the batch: queued runs are cancelled and running ones killed (the
  local worker processes are killed, and their kernels exit with them); finished runs
  are kept and a rerun resumes.
- A failed run records its traceback under its key and the batch goes on;
  finished and diverged runs are cached, failed ones are retried next time.
- Local runs reuse warm kernels: each job slot is a worker process that keeps one
  Jupyter kernel across its runs (imports, torch above all, are paid once per slot, not
  once per run). Before each run the kernel's namespace is reset (`%reset -f`, open
  figures closed, garbage collected, execution count, working directory and thread hint
  restored), so no variable of an earlier run is seen by a later one; imported modules
  and their state stay. A run that fails, or a kernel that dies or does not answer the
  reset, costs the slot its kernel: the next run gets a fresh one. Exclusive runs and
  runs the plan gives `threads` get a fresh kernel of their own each (their thread count
  is set before torch is imported), and so do runs on Dask.
- Runs the plan marks `exclusive` run one at a time with nothing else of the batch
  running (locally and on Dask), before the others; the others start longest first, each
  on the first free slot.
- A run that needs others (`needs` in the plan) starts only once they are finished: locally
  the first waiting run whose needs are done takes the next free slot (no batch-wide
  barrier); on Dask its task takes theirs as arguments, so the cluster orders them. The
  runs an exclusive run needs run alone before it. If a needed run failed, diverged, or is
  neither in the batch nor finished in the results, the run is not executed: it is
  recorded as failed, saying which run it needs and why, and is retried next time.
- Kernels get their CPU threads through their environment (OMP_NUM_THREADS); local
  parallel runs share the cores, and as a batch winds down the runs still going are told
  (a hint file per slot, see `train.follow_thread_hint`) to take the threads of finished
  ones; a warm kernel rereads its slot's hint when it is reset for its next run.
"""
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from analysis import paths, plan
from analysis.artifacts import read_json, write
from analysis.data import FOLDER
from analysis.results import DONE
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

    return {"fingerprint": data_fingerprint(data_root),
            "pixels_sha256": data.pixel_hashes(data_root),  # decoded once, cached
            "official": data.is_official(data_root)}


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


@contextlib.contextmanager
def _new_run(results: Path, run: dict, force: bool):
    """Hold `run`'s lock and yield a fresh temporary folder holding its params, or None when
    the run is done already (and not forced). Another runner on the same results may hold
    the run: this waits for it, and then the run is usually cached (or failed there, and is
    retried here)."""
    key = run["key"]
    with _lock(results, key, wait=True):
        if is_done(results, key) and not force:
            yield None
            return
        tmp = results / "runs" / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        write(tmp, "params", run)
        yield tmp


def execute(run: dict, results: Path, data_root: Path, force: bool = False,
            experiments_dir: Path = paths.EXPERIMENTS_DIR, threads: int | None = None,
            threads_file: Path | None = None, kernel: "WarmKernel | None" = None) -> Outcome:
    """Run one notebook (a plan.Run record) into results/runs/<key>; never raises.

    `threads`: the CPU threads the runner gives a run the plan gives none (see
    `kernel_threads`); `threads_file`: a file the kernel rereads for that number each epoch.
    `kernel`: a job slot's warm kernel to run in (reset first; replaced if the run fails);
    without one, papermill starts a fresh kernel for the run and shuts it down after.
    """
    import papermill

    results, key = Path(results), run["key"]
    final = results / "runs" / key
    experiments = tuple(run["experiments"])
    with _new_run(results, run, force) as tmp:
        if tmp is None:
            return Outcome(key, "cached", experiments=experiments)
        start = time.time()
        status = {"key": key, "started": _now(), "host": socket.gethostname(),
                  "versions": _versions(), "git_commit": _git_commit(),
                  "data": data_identity(data_root)}
        env = _kernel_env(run, threads, threads_file)
        _quiet_runner_params()
        try:
            if kernel is None:
                # The kernel's start-up warnings would drown the progress bar, and so would
                # the "KeyboardInterrupt caught in kernel" ERROR that ipykernel logs when
                # jupyter_client's shutdown interrupts it; cell errors still reach papermill.
                where = {"kernel_manager_class": _kernel_manager(env),
                         "extra_arguments": KERNEL_ARGUMENTS}
                status["kernel"] = {"pid": None, "earlier_runs": 0}
            else:
                # papermill hands `km` to nbclient, which neither starts nor shuts down a
                # kernel it is given (NotebookClient.setup_kernel: `km.has_kernel`).
                where = {"km": kernel.ready(env)}
                status["kernel"] = {"pid": kernel.pid, "earlier_runs": kernel.runs - 1}
            papermill.execute_notebook(
                str(Path(experiments_dir) / run["notebook"]), str(tmp / "notebook.ipynb"),
                parameters={**run["params"], "run_dir": str(tmp), "data_dir": str(data_root),
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
        _publish(tmp, final)
        if kernel is not None:
            kernel.finished(ok=status["status"] != "failed")
        return Outcome(key, status["status"], status["seconds"], status.get("error"), experiments)


def unmet_need(run: dict, results: Path, outcomes: dict, names: dict) -> str | None:
    """Why `run` cannot start, or None when every run it needs is finished.

    `outcomes`: this batch's Outcome of each needed run that has one (a failure that left
    no record, such as a dead worker, is known from it); the others are read from their
    status.json. `names`: labels of the needed runs (`plan.labels`), for the message.
    """
    for key in run.get("needs") or ():
        which = f"run {key}" + (f" ({names[key]})" if names.get(key) else "")
        outcome = outcomes.get(key)
        if outcome is not None and outcome.status in ("failed", "diverged"):
            state, error = outcome.status, outcome.error
        else:
            record = read_json(Path(results) / "runs" / key / "status.json")
            state, error = record.get("status"), record.get("error")
        if state == "finished":
            continue
        if state is None:
            return (f"needs {which}, which is neither in this batch nor finished under "
                    f"{results}; run `dlbook run --only {run['experiments'][0]}`, which runs "
                    "it first")
        return f"needs {which}, which {state}: {error}; fix that run and run again"
    return None


def fail_unmet(run: dict, results: Path, problem: str, force: bool = False) -> Outcome:
    """Record `run` as failed without executing it (`problem`: its `unmet_need`), so that
    `dlbook status` says why and the next batch retries it. A finished copy is kept: the
    run it needed was finished when it ran, and its key still names that run."""
    results, key = Path(results), run["key"]
    experiments = tuple(run["experiments"])
    with _new_run(results, run, force) as tmp:
        if tmp is None:
            return Outcome(key, "cached", experiments=experiments)
        write(tmp, "status", {"key": key, "started": _now(), "finished": _now(), "seconds": 0.0,
                              "host": socket.gethostname(), "status": "failed",
                              "error": problem, "needs": run.get("needs") or []})
        _publish(tmp, final=results / "runs" / key)
    return Outcome(key, "failed", 0.0, problem, experiments)


def execute_after(run: dict, names: dict, results: Path, data_root: Path, force: bool,
                  experiments_dir: Path, *needed: "Outcome | None") -> Outcome:
    """`execute` once the runs `run` needs are done, or `fail_unmet` if one is not finished.

    For Dask: `needed` are the Outcomes of `run["needs"]`, in that order, passed as futures
    so that the cluster starts this task only after theirs (None: a run not in the batch,
    whose record is read from the results). Never raises, like `execute`.
    """
    outcomes = {key: o for key, o in zip(run.get("needs") or (), needed, strict=True)
                if o is not None}
    problem = unmet_need(run, results, outcomes, names)
    if problem:
        return fail_unmet(run, results, problem, force)
    return execute(run, results, data_root, force, experiments_dir)


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


KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]
# nbclient gives the kernels it starts an in-memory history (NotebookClient.ipython_hist_file:
# kernels running at once would otherwise share one sqlite file); a warm kernel, which nbclient
# does not start, gets the same.
WARM_KERNEL_ARGUMENTS = [*KERNEL_ARGUMENTS, "--HistoryManager.hist_file=:memory:"]
RESET_TIMEOUT = 60.0  # seconds a warm kernel may take to reset before it is replaced

# Run silently (no history, no execution count, no output) in a warm kernel before each
# run, through a client of its own: the run's notebook is saved as a fresh kernel runs it.
RESET_CODE = """\
%reset -f
import gc as _gc, os as _os, sys as _sys
if "matplotlib.pyplot" in _sys.modules:
    _sys.modules["matplotlib.pyplot"].close("all")
_os.chdir({cwd!r})
{omp}
if "analysis.train" in _sys.modules:
    _sys.modules["analysis.train"].follow_thread_hint()
_sys.modules["IPython"].get_ipython().execution_count = 1
_gc.collect()
del _gc, _os, _sys
"""


def _kernel_manager(env: dict):
    """A kernel manager class whose kernels see `env` on top of this process's environment.

    Handed to the kernel rather than set in os.environ, as a Dask worker runs several runs
    in threads of one process, each with its own thread count. The manager remembers the
    clients it made, so that `WarmKernel` can close the ones nbclient leaves open."""
    from jupyter_client import AsyncKernelManager  # nbclient's default kernel manager

    class KernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**kw.get("env", os.environ), **env}
            if os.name == "posix":
                # Unix sockets in a folder of its own, not TCP ports: kernels that parallel
                # job slots start at the same moment can pick the same free port, and one
                # then fails with "Address already in use".
                self.transport = "ipc"
                self.ip = os.path.join(tempfile.mkdtemp(prefix="dlbook-kernel-"), "socket")
            return await super().start_kernel(**kw)

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart)
            if self.transport == "ipc" and not restart:
                shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

        def client(self, **kw):
            kc = super().client(**kw)
            self.__dict__.setdefault("dlbook_clients", []).append(kc)
            return kc

    return KernelManager


class WarmKernel:
    """A job slot's Jupyter kernel, kept alive across the runs the slot executes.

    `ready` starts it for the slot's first run (with that run's kernel environment) and
    resets it before each later one (RESET_CODE: the namespace is emptied, modules stay
    imported); `finished` closes the clients nbclient opened, and shuts the kernel down
    after a failed run, whose state may be broken: the next `ready` starts a fresh one,
    as it does for a kernel that died or did not answer the reset in RESET_TIMEOUT.
    Used from one thread, whose event loop (jupyter_core's `run_sync`) nbclient shares.
    """

    def __init__(self):
        self.km = None
        self.runs = 0  # runs started in the current kernel

    @property
    def pid(self) -> int | None:
        return getattr(self.km.provisioner, "pid", None) if self.km is not None else None

    def ready(self, env: dict):
        """The kernel manager of a live kernel with an empty namespace, for the next run."""
        from jupyter_core.utils import run_sync

        if self.km is not None:
            try:
                run_sync(self._reset)(env)
            except Exception:  # noqa: BLE001 - dead, hung or broken: a fresh kernel instead
                self.close(now=True)
        if self.km is None:
            self.km = _kernel_manager(env)(kernel_name="python3")
            self.runs = 0
            run_sync(self.km.start_kernel)(extra_arguments=WARM_KERNEL_ARGUMENTS,
                                           cwd=str(paths.PROJECT_ROOT))
        self.runs += 1
        return self.km

    async def _reset(self, env: dict) -> None:
        import asyncio

        if not await self.km.is_alive():
            raise RuntimeError("the kernel died")
        omp = env.get("OMP_NUM_THREADS")
        code = RESET_CODE.format(cwd=str(paths.PROJECT_ROOT), omp="" if omp is None else
                                 f"_os.environ['OMP_NUM_THREADS'] = {omp!r}")
        kc = self.km.client()
        # The shell channel alone: its replies are routed to this client, with no
        # subscription to wait for (IOPub would need one).
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        try:
            msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)

            async def reply_to_reset():
                while True:
                    reply = await kc.shell_channel.get_msg()
                    if reply["parent_header"].get("msg_id") == msg_id:
                        return reply

            # wait_for, not asyncio.timeout: the package supports Python 3.10.
            reply = await asyncio.wait_for(reply_to_reset(), RESET_TIMEOUT)
        finally:
            self._close_clients()
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"reset failed: {reply['content'].get('ename')}: "
                               f"{reply['content'].get('evalue')}")

    def finished(self, ok: bool) -> None:
        """After a run: close its clients; after a failed one, the kernel too."""
        self._close_clients()
        if not ok:
            self.close(now=True)

    def _close_clients(self) -> None:
        if self.km is not None:
            for kc in self.km.__dict__.pop("dlbook_clients", []):
                with contextlib.suppress(Exception):
                    kc.stop_channels()

    def close(self, now: bool = False) -> None:
        """Shut the kernel down (`now`: kill it rather than ask it to exit)."""
        from jupyter_core.utils import run_sync

        km, self.km = self.km, None
        if km is None:
            return
        for kc in km.__dict__.pop("dlbook_clients", []):
            with contextlib.suppress(Exception):
                kc.stop_channels()
        with contextlib.suppress(Exception):
            run_sync(km.shutdown_kernel)(now=now)


def _warm(run: dict) -> bool:
    """Whether a run may use its slot's warm kernel: not one whose threads the plan sets
    (exclusive, or `threads`), which must be in the kernel's environment before torch loads."""
    return not (run.get("exclusive") or run.get("threads"))


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
    # The runs they need come too (trained first, or found cached), whatever --only says.
    selected = plan.with_needs(selected, all_runs)
    return profile, data_root, results, all_runs, selected


def run_batch(runs: list, results: Path, data_root: Path, *, jobs: int = 1, force=False,
              dask_address: str | None = None, progress=True,
              experiments_dir: Path = paths.EXPERIMENTS_DIR) -> list[Outcome]:
    """Execute runs (skipping finished ones) with a progress bar; return one Outcome each.

    Exclusive runs go first, one at a time, with nothing else of the batch running (and the
    runs they need before them); then the others, longest first (`plan.dispatch_order`),
    each once the runs it needs are finished (else it fails, see `unmet_need`).
    """
    from tqdm.auto import tqdm

    results.mkdir(parents=True, exist_ok=True)
    sweep_stale(results)
    ordered = plan.dispatch_order(runs)
    alone = plan.runs_alone(runs)
    exclusive = [r.record() for r in ordered if r.key in alone]  # and the runs they need
    shared = [r.record() for r in ordered if r.key not in alone]
    todo = exclusive + shared
    # A bar on a terminal; in a log (quarto's pre-render, CI) one line per run instead.
    live = progress and sys.stderr.isatty()
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not live)
    outcomes = []
    by_key: dict[str, Outcome] = {}
    names = plan.labels(runs)
    eta = TimeLeft({r["key"]: plan.expected_cost(r["notebook"], r["params"]) for r in todo},
                   jobs=1 if dask_address else jobs)

    def done(outcome: Outcome):
        outcomes.append(outcome)
        by_key[outcome.key] = outcome
        what = f"{names.get(outcome.key, ','.join(outcome.experiments))} {outcome.status}"
        # A run that took no time (cached, or not executed: its needs unmet, its worker
        # dead) sets no pace.
        left = eta.done(outcome.key, outcome.seconds,
                        cached=outcome.status == "cached" or not outcome.seconds)
        bar.update(1)
        bar.set_postfix_str(f"{left}; last: {what}", refresh=False)
        if progress and not live and outcome.status != "cached":
            print(f"[{len(outcomes)}/{len(todo)}] {what} ({outcome.seconds:.0f} s; {left})",
                  file=sys.stderr, flush=True)

    if dask_address:
        from dask.distributed import as_completed

        client = _dask_client(dask_address)
        with client:
            # Dask runs get a fresh kernel each (no `kernel`): a worker runs several runs at
            # once in threads of one process, each with its own event loop and thread count,
            # and a kernel kept per worker thread would outlive the batch in the cluster.
            # Each exclusive run is submitted alone and awaited before anything else is
            # submitted: the runner cannot see the workers, only what it submitted itself.
            # A run's task takes the futures of the runs it needs (or their outcomes, when
            # known already): the cluster starts it once they are done.
            futures = {}

            def submit(r: dict):
                needed = [futures.get(k, by_key.get(k)) for k in r["needs"]]
                return client.submit(execute_after, r, {k: names.get(k) for k in r["needs"]},
                                     results, data_root, force, experiments_dir, *needed,
                                     pure=False)

            for r in exclusive:
                done(submit(r).result())
            for r in shared:  # in dispatch order: a needed run is submitted first
                futures[r["key"]] = submit(r)
            for fut in as_completed(list(futures.values())):
                done(fut.result())
    else:
        def unmet(run: dict) -> Outcome | None:
            problem = unmet_need(run, results, by_key, names)
            return None if problem is None else fail_unmet(run, results, problem, force)

        args = (results, data_root, force, experiments_dir)
        if jobs > 1:
            # A barrier: the exclusive runs first, one at a time, then the rest in parallel.
            # Simpler than holding slots empty mid-batch, and first rather than last so a
            # latency measurement is not left waiting behind the batch's longest run; the
            # idle slots cost little, as the runs that measure latency are short.
            _in_processes(exclusive, 1, done, args, unmet)
            _in_processes(shared, jobs, done, args, unmet)
        else:
            # One worker process too, for its warm kernel and for Ctrl-C to stop a run at once.
            _in_processes(todo, 1, done, args, unmet)
    bar.close()
    return outcomes


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


class TimeLeft:
    """Estimated time left in a batch: the plan's cost estimate of every run still to come
    (`plan.expected_cost`, plus FIXED_COST for a run's start-up), priced at the seconds per
    unit of cost the training runs executed so far took, shared among the jobs that run
    at once. Runs without training cost (latency, cost tables) do not set the pace: their
    time has nothing to do with multiply-accumulates. An estimate: MACs price a ResNet
    epoch higher than a CPU takes to run it, so with both in a batch it errs long."""

    FIXED_COST = 2e10  # roughly what a LeNet-5 run trains in a run's fixed seconds

    def __init__(self, costs: dict[str, float], jobs: int = 1):
        self.left = {key: cost + self.FIXED_COST for key, cost in costs.items()}
        self.training = {key for key, cost in costs.items() if cost > 0}
        self.jobs = max(1, jobs)
        self.seconds_spent = self.cost_spent = 0.0

    def done(self, key: str, seconds: float = 0.0, cached: bool = False) -> str:
        cost = self.left.pop(key, 0.0)
        if not cached and key in self.training:  # a cached run took no time: no pace
            self.seconds_spent += seconds
            self.cost_spent += cost
        return self.text()

    def seconds(self) -> float | None:
        if not self.cost_spent:
            return None
        return self.seconds_spent / self.cost_spent * sum(self.left.values()) / self.jobs

    def text(self) -> str:
        s = self.seconds()
        if not self.left:
            return "done"
        return "time left unknown yet" if s is None else f"about {_duration(s)} left"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _in_processes(todo: list[dict], jobs: int, done, args: tuple, unmet=None) -> None:
    """Execute runs in up to `jobs` worker processes, reporting each Outcome to `done`.

    Each worker is a job slot that keeps a warm kernel (`WarmKernel`) across its runs; the
    first run in `todo` order whose needs are done (none of them waits in `todo` or runs)
    goes to whichever slot is free; while none can start, the batch waits for a running
    one to end. `unmet(run)`, asked as a run with needs is due, returns the failed Outcome
    of a run whose needs are not met (it is not executed), or None. Processes, not
    threads, so that Ctrl-C can stop runs in flight: the workers ignore SIGINT, and on any
    interruption the parent kills them (their kernels notice their parent is gone and
    exit); a killed run leaves only its `.tmp-` folder, swept next time. A worker that
    dies fails its run only; the next run gets a new worker. With more than one job, runs
    whose threads the runner chooses get `thread_share` of the cores at start, and their
    slot's hint file is rewritten at each run's start and as the batch winds down
    (`train.follow_thread_hint`).
    """
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")  # no re-import of the caller's __main__
    cpus = os.cpu_count() or 1
    sharing = jobs > 1  # one job: the kernel's own default threads, and no hint to follow
    pending, idle, busy, slots = list(todo), [], {}, []
    unresolved = {run["key"] for run in todo}  # pending or running: their dependents wait
    finished = False
    try:
        while pending or busy:
            starting = []
            while len(busy) + len(starting) < jobs:
                run = next((r for r in pending if not unresolved & set(r.get("needs") or ())),
                           None)
                if run is None:
                    break
                pending.remove(run)
                failed = unmet(run) if unmet and run.get("needs") else None
                if failed is not None:
                    unresolved.discard(run["key"])
                    done(failed)
                else:
                    starting.append(run)
            if not (starting or busy):
                if not pending:
                    break
                raise RuntimeError("runs that need each other, none can start: "
                                   f"{', '.join(r['key'] for r in pending)}")
            share = thread_share(cpus, jobs, len(busy) + len(starting), len(pending))
            for run in starting:
                slot = idle.pop() if idle else None
                if slot is not None and not slot.process.is_alive():  # died while idle
                    slot.retire(slots)
                    slot = None
                slot = slot or _Slot.start(ctx, slots, args)
                hint = slot.hint if sharing and _shares_cores(run) else None
                if hint:
                    _write_threads(hint, share)
                # Should the worker be gone already, its pipe reads EOF below: the run fails.
                slot.send((run, share if sharing else None, hint))
                busy[slot.conn] = (slot, run, hint)
            if not pending:  # the batch winds down: finished runs' threads to the rest
                for _, _, hint in busy.values():
                    if hint:
                        _write_threads(hint, share)
            for conn in wait(list(busy)):
                slot, run, _ = busy.pop(conn)
                try:
                    outcome = conn.recv()
                except EOFError:  # killed, or out of memory: only this run fails
                    slot.retire(slots)
                    outcome = Outcome(
                        run["key"], "failed", experiments=tuple(run["experiments"]),
                        error=f"runner process died (exit code {slot.process.exitcode})")
                else:
                    idle.append(slot)
                unresolved.discard(run["key"])
                done(outcome)
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
    def start(cls, ctx, slots: list, args: tuple) -> "_Slot":
        number = min(set(range(len(slots) + 1)) - {s.number for s in slots})
        mine, theirs = ctx.Pipe()
        # The child closes its copies of the parent's ends of the pipes (its own and the
        # other workers'), so that every worker reads EOF once the parent is gone.
        inherited = [s.conn for s in slots] + [mine]
        process = ctx.Process(target=_worker, args=(theirs, inherited, *args), daemon=True)
        process.start()
        theirs.close()
        slot = cls(number, process, mine, _threads_file(args[0], number))
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


def _worker(conn, inherited, results, data_root, force, experiments_dir) -> None:
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
    contextvars.Context().run(_serve, conn, results, data_root, force, experiments_dir)


def _serve(conn, results, data_root, force, experiments_dir) -> None:
    kernel = WarmKernel()
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:  # the parent is gone
                return
            if job is None:
                return
            run, share, hint = job
            outcome = execute(run, results, data_root, force, experiments_dir, share, hint,
                              kernel=kernel if _warm(run) else None)
            try:
                conn.send(outcome)
            except OSError:  # the parent is gone (its run is published all the same)
                return
    finally:
        kernel.close()


def thread_share(cpus: int, jobs: int, running: int, pending: int) -> int:
    """CPU threads for each of `running` local runs, while `pending` more wait for a slot.

    While runs wait, every slot is soon busy again: each run gets an even share of the
    cores among `jobs`, also one that starts while others run. Once none waits, the cores
    of finished runs go to the runs still going, down to every core for the last one.
    """
    slots = jobs if pending else min(running, jobs)
    return max(1, cpus // max(1, slots))


def _threads_file(results: Path, slot: int) -> Path:
    # Per runner process too: another runner on the same results must not touch it.
    return Path(results) / "locks" / f"slot{slot}.{os.getpid()}.threads"


def _write_threads(path: Path, threads: int) -> None:
    """Replace the hint in one rename, so the kernel never reads half a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(str(threads))
    tmp.replace(path)


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
    """Per planned run: cached (finished/diverged), failed, missing, or pending (missing,
    and a run it needs is not finished: `waits` says which, and why if that one failed);
    and stale runs on disk (same notebook and parameters under another key: code, notebook,
    data or the run it needs changed)."""
    planned = {r.key for r in runs}
    by_params = {}
    runs_dir = results / "runs"
    if runs_dir.exists():
        for d in runs_dir.iterdir():
            if d.name.startswith(".") or d.name in planned:
                continue
            p = read_json(d / "params.json")
            if p:
                by_params.setdefault(_same_params(p.get("notebook"), p.get("params") or {}),
                                     []).append(d.name)
    rows = []
    names = plan.labels(runs)
    for r in runs:
        record = read_json(results / "runs" / r.key / "status.json")
        st = record.get("status")
        state = "cached" if st in DONE else ("failed" if st == "failed" else "missing")
        stale = by_params.get(_same_params(r.notebook, r.params), [])
        waits = _waits_for(results, r, names) if state == "missing" else None
        rows.append({"key": r.key, "run": names[r.key], "experiments": ",".join(r.experiments),
                     "state": "pending" if waits else state,
                     "result": st or "", "stale": len(stale), "seed": r.params.get("seed"),
                     "error": record.get("error") if st == "failed" else None,
                     "waits": waits})
    return rows


def _same_params(notebook: str, params: dict) -> tuple:
    """What a stale run shares with a planned one: the notebook and the parameters, but for
    the key of the run it needs (a run that read an older model is stale too)."""
    return notebook, json.dumps({k: v for k, v in params.items() if k != plan.TRAINED_RUN},
                                sort_keys=True)


def _waits_for(results: Path, run, names: dict) -> str | None:
    """The runs `run` needs that are not finished, each with its state (and error)."""
    unmet = []
    for key in run.needs:
        record = read_json(results / "runs" / key / "status.json")
        st = record.get("status")
        if st != "finished":
            error = f": {record.get('error')}" if st in ("failed", "diverged") else ""
            unmet.append(f"{names.get(key, key)} ({st or 'missing'}{error})")
    return "; ".join(unmet) or None


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
        if row.get("waits"):
            print(f"{'':{width + 18}s}waits for {row['waits']}")
    states = [r["state"] for r in rows]
    pending = f"pending {states.count('pending')}, " if "pending" in states else ""
    print(f"cached {states.count('cached')}, missing {states.count('missing')}, {pending}"
          f"failed {states.count('failed')}, stale {sum(r['stale'] > 0 for r in rows)}")
