"""What a batch shows while it runs: how many runs are done, the last one's result, and the
time left, estimated from the plan before the first run ends.

The estimate: each run's expected work (`plan.expected_work`: images through training steps,
and through forward passes alone), priced at the seconds per image that `calibrate` measures
for its model on this machine (a few seconds, before the batch, when runs are to execute),
plus FIXED_SECONDS for its start-up. Once runs of a kind (a notebook and a model) have
executed, the estimates of the others of that kind are scaled by how long those took against
theirs (what the measurement does not see: runs sharing the cores, reading the data). The
batch's time left: the runs to come and what is left of the running ones, shared among the
jobs, but never less than the longest of them (a run is not split); runs that run alone
(exclusive) count whole.

    python -m analysis.progress < {"lenet5": {config}, ...}   # what `calibrate` runs
"""
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from analysis import kernels, paths, plan, store

# A run's start-up: a fresh kernel or a warm one's reset, imports, reading the data
# (bench_profile.py measures it: 2 to 7 s on 2 CPU cores).
FIXED_SECONDS = 5.0
CALIBRATION_TIMEOUT = 300  # seconds; past it, no estimate until runs have executed


@dataclass(frozen=True)
class Pace:
    """Seconds per image for one model: of a training step, and of a forward pass alone."""
    train: float
    forward: float


def calibrate(runs: list, threads: int | None = None) -> dict[str, Pace]:
    """The Pace of each model that `runs` train or study (plan.Run objects), measured on
    random images through the training engine in a fresh process with `threads` CPU threads
    (None: torch's default), on the device the runs ask for, with the first run's options
    (batch size, optimizer, ...). Seconds: one warm-up step and one timed step per model.
    {} when no run has expected work, or the measurement fails."""
    from analysis import train

    configs: dict[str, dict] = {}
    for run in runs:
        work = plan.expected_work(run.notebook, run.params)
        if work is not None and work.model not in configs:
            options = {k: v for k, v in run.params.items() if k in train.DEFAULTS}
            configs[work.model] = {**options, "model": work.model}
    if not configs:
        return {}
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    try:
        done = subprocess.run([sys.executable, "-m", "analysis.progress"],
                              input=json.dumps(configs), capture_output=True, text=True,
                              env=env, cwd=paths.PROJECT_ROOT, timeout=CALIBRATION_TIMEOUT,
                              check=True)
        return {model: Pace(**pace) for model, pace in json.loads(done.stdout).items()}
    except (OSError, subprocess.SubprocessError, ValueError, TypeError):
        return {}


def measure(configs: dict[str, dict]) -> dict[str, dict]:
    """Per model: seconds per image of a training step (`train.train_epoch`, one step of the
    config's batch size) and of evaluation (`train.evaluate`); what `calibrate` runs in its
    process."""
    import torch

    from analysis import train
    from analysis.data import CIFAR10_CLASSES, Cifar10

    out = {}
    for model, config in configs.items():
        cfg = train.validate_config({**config, "subset": None})
        n = cfg["batch_size"]
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
        y = torch.arange(n) % len(CIFAR10_CLASSES)
        half = torch.full((3,), 0.5)
        data = Cifar10(x, y, x, y, x, y, CIFAR10_CLASSES, half, half / 2, None)
        engine = train.prepare(cfg, data, train.select_device(cfg["device"]))
        out[model] = asdict(Pace(_timed(train.train_epoch, engine, 1) / n,
                                 _timed(train.evaluate, engine.model, engine.data.val_x,
                                        engine.data.val_y, engine.data) / n))
    return out


def _timed(step, *args, budget: float = 0.3, most: int = 10) -> float:
    """Seconds of the fastest of the calls after the first (which builds the kernels of
    these shapes), repeated for up to `budget` seconds and `most` calls: one call of a small
    model's step lasts milliseconds, and one such timing came out twice too slow. The
    engine's steps read their results back, so the device has finished when they return."""
    step(*args)
    times: list[float] = []
    while not times or (sum(times) < budget and len(times) < most):
        start = time.perf_counter()
        step(*args)
        times.append(time.perf_counter() - start)
    return min(times)


class TimeLeft:
    """The time a batch has left (see the module's docstring): `started` and `done` as runs
    start and end, `text` at any moment."""

    def __init__(self, runs: list, pace: dict[str, Pace], jobs: int = 1, alone=()):
        self.jobs = max(1, jobs)
        self.alone = set(alone)
        self.kind, self.estimate, self.priced = {}, {}, {}
        for run in runs:
            work = plan.expected_work(run.notebook, run.params)
            self.kind[run.key] = (run.notebook, work and work.model)
            p = pace.get(work.model) if work is not None else None
            self.estimate[run.key] = FIXED_SECONDS + (
                work.train * p.train + work.forward * p.forward if p else 0.0)
            self.priced[run.key] = work is None or p is not None  # no guess in it
        self.left = set(self.estimate)
        self.since: dict[str, float] = {}  # running runs: when they started
        # Per kind of run, over its executed runs: seconds taken, and estimated.
        self.taken: dict[tuple, float] = defaultdict(float)
        self.expected: dict[tuple, float] = defaultdict(float)

    def started(self, key: str, now: float | None = None) -> None:
        self.since[key] = time.monotonic() if now is None else now

    def done(self, key: str, seconds: float = 0.0) -> None:
        """`key` ended after `seconds` (0: it did not execute, as a cached run)."""
        self.left.discard(key)
        self.since.pop(key, None)
        if seconds > 0:
            self.taken[self.kind[key]] += seconds
            self.expected[self.kind[key]] += self.estimate[key]

    def seconds(self, now: float | None = None) -> float | None:
        """Seconds left; None while a run's work has no price (its model was not measured)
        and no run of its kind has executed."""
        now = time.monotonic() if now is None else now
        alone, rest = 0.0, []
        for key in self.left:
            kind = self.kind[key]
            if not (self.priced[key] or self.taken[kind]):
                return None
            scale = self.taken[kind] / self.expected[kind] if self.taken[kind] else 1
            s = max(self.estimate[key] * scale - (now - self.since.get(key, now)), 0.0)
            if key in self.alone:
                alone += s
            else:
                rest.append(s)
        return alone + max(sum(rest) / self.jobs, max(rest, default=0.0))

    def text(self, now: float | None = None) -> str:
        if not self.left:
            return "done"
        s = self.seconds(now)
        if s is None:
            return "time left unknown yet"
        until = datetime.now() + timedelta(seconds=s)
        return f"about {duration(s)} left, until {until:%H:%M}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """A batch's progress as the runner reports it: on a terminal one bar (runs done, time
    elapsed, the time left, the last run's result), in a log (quarto's pre-render, CI) one
    line per executed run; with `show` False, nothing. Keeps the Outcomes: `outcomes` in
    the order they came, `by_key`; `names`: the runs' labels."""

    def __init__(self, runs: list, settings, *, jobs: int = 1, alone=(), show: bool = True):
        from tqdm.auto import tqdm

        self.names = {r.key: r.name for r in runs}
        self.outcomes: list = []
        self.by_key: dict = {}
        self.show, self.live = show, show and sys.stderr.isatty()
        self.last = ""  # the last run's label and result
        # Measured only where someone is told, and something is to execute.
        todo = [r for r in runs if show
                and (settings.force or not store.is_done(settings.results, r.key))]
        start = time.perf_counter()
        pace = calibrate(todo, _threads(jobs)) if todo else {}
        self.left = TimeLeft(runs, pace, jobs, alone)
        if todo:
            measured = f" (speeds measured in {time.perf_counter() - start:.0f} s)" if pace else ""
            print(f"dlbook run: {len(todo)} of {len(runs)} runs to execute, {self.left.text()}"
                  f"{measured}", file=sys.stderr, flush=True)
        # tqdm's own rate and time left are left out: they would count the cached runs too.
        self.bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not self.live,
                        bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}")

    def started(self, run) -> None:
        self.left.started(run.key)

    def done(self, outcome) -> None:
        self.outcomes.append(outcome)
        self.by_key[outcome.key] = outcome
        self.left.done(outcome.key, 0.0 if outcome.status == "cached" else outcome.seconds)
        self.last = f"{self.names.get(outcome.key, outcome.key)} {outcome.verdict}"
        self.bar.update(1)
        self.tick()
        if self.show and not self.live and outcome.status != "cached":
            print(f"[{len(self.outcomes)}/{self.bar.total}] {self.last} "
                  f"({outcome.seconds:.0f} s; {self.left.text()})", file=sys.stderr, flush=True)

    def tick(self) -> None:
        """The time left, refreshed on the bar (between runs too; a log gets no line)."""
        if self.live:
            self.bar.set_postfix_str(f"{self.left.text()}; last: {self.last}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _threads(jobs: int) -> int | None:
    """The CPU threads a run gets while every job slot is busy (None: torch's default, or
    the user's OMP_NUM_THREADS, which the measuring process inherits)."""
    if jobs == 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    return kernels.thread_share(os.cpu_count() or 1, jobs, jobs, 1)


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.stdin.read()))))
