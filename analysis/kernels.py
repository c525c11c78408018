"""Jupyter kernels for the runs: the CPU threads each gets, and the warm kernel that a job
slot keeps across its runs.

- Kernels get their CPU threads through their environment (OMP_NUM_THREADS): the plan's
  (`threads`, or every core for an exclusive run), else the user's OMP_NUM_THREADS, else
  the share of the cores the runner gives them; a kernel whose share the runner chooses
  rereads it from a hint file (`train.follow_thread_hint`), so that as a batch winds down
  the runs still going take the threads of finished ones.
- A warm kernel (`WarmKernel`) is kept across a job slot's runs, so that imports, torch
  above all, are paid once per slot, not once per run. Before each run its namespace is
  reset (`%reset -f`, open figures closed, garbage collected, execution count, working
  directory and thread hint restored), so no variable of an earlier run is seen by a later
  one; imported modules and their state stay. A run that fails, or a kernel that dies or
  does not answer the reset, costs the slot its kernel: the next run gets a fresh one.
  Runs whose threads the plan sets get a fresh kernel each: their count must be in the
  kernel's environment before torch is imported.
"""
import contextlib
import os
import shutil
import tempfile

from analysis import paths
from analysis.train import THREADS_FILE_ENV


def planned_threads(run) -> int | None:
    """The CPU threads the plan fixes for a run (a plan.Run): its `threads`, or every core
    of this machine for an exclusive run (the machine is its own, whatever OMP_NUM_THREADS
    says: a Dask worker sets it to 1); None where the plan leaves them open."""
    if run.threads:
        return run.threads
    if run.exclusive:
        return os.cpu_count() or 1
    return None


def shares_cores(run) -> bool:
    """Whether the runner chooses a run's threads, and may change them while it runs: the
    plan leaves them open and the user set no OMP_NUM_THREADS, which a share never overrides."""
    return planned_threads(run) is None and not os.environ.get("OMP_NUM_THREADS")


def kernel_threads(run, share: int | None = None) -> int | None:
    """The CPU threads a run's kernel gets (None: it inherits this process's setting): the
    plan's, else `share` where the runner chooses (`shares_cores`)."""
    planned = planned_threads(run)
    if planned is not None:
        return planned
    return share if shares_cores(run) else None


def thread_share(cpus: int, jobs: int, running: int, pending: int) -> int:
    """CPU threads for each of `running` local runs, while `pending` more wait for a slot.

    While runs wait, every slot is soon busy again: each run gets an even share of the
    cores among `jobs`, also one that starts while others run. Once none waits, the cores
    of finished runs go to the runs still going, down to every core for the last one.
    """
    slots = jobs if pending else min(running, jobs)
    return max(1, cpus // max(1, slots))


def kernel_env(run, share: int | None, threads_file=None) -> dict:
    """What a run's kernel adds to this process's environment: its threads, and the hint
    file it rereads them from."""
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


def kernel_manager(env: dict):
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
            self.km = kernel_manager(env)(kernel_name="python3")
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
            _close_clients(self.km)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"reset failed: {reply['content'].get('ename')}: "
                               f"{reply['content'].get('evalue')}")

    def finished(self, ok: bool) -> None:
        """After a run: close its clients; after a failed one, the kernel too."""
        _close_clients(self.km)
        if not ok:
            self.close(now=True)

    def close(self, now: bool = False) -> None:
        """Shut the kernel down (`now`: kill it rather than ask it to exit)."""
        from jupyter_core.utils import run_sync

        km, self.km = self.km, None
        if km is None:
            return
        _close_clients(km)
        with contextlib.suppress(Exception):
            run_sync(km.shutdown_kernel)(now=now)


def _close_clients(km) -> None:
    """Close the clients nbclient and the reset opened on a kernel manager (None: none)."""
    for kc in (km.__dict__.pop("dlbook_clients", []) if km is not None else []):
        with contextlib.suppress(Exception):
            kc.stop_channels()
