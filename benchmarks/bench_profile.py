"""What a profile's runs cost beyond their training: the fixed cost of one run, and how
well a batch of runs kept its jobs busy.

1. Fixed cost. --repeats + 1 0-epoch LeNet-5 runs (seeds 0, 1, ...) go through the real
   runner path (`runner.run_batch` with one job: a worker process, its warm kernel,
   train.ipynb, the status record) as one batch, into a temporary results folder. The
   first run starts the slot's kernel (cold: kernel start, `import torch`, torch._dynamo
   imported by the first optimizer, the data read); the later ones reuse it after a
   namespace reset (warm), as every run after a slot's first does in a batch. Printed:
   the cold run, the median of the warm ones (each run's status `seconds`), and the
   batch's wall time. Measured in the same process, for scale (median of --repeats):
   a fresh interpreter importing torch, a Jupyter kernel starting and stopping, the
   notebook's training call (`train.train`, 0 epochs) in a fresh interpreter, and the
   same call made a second time in one interpreter. A run's cost over the matching
   training call is what the runner, papermill and the kernel add.

2. Parallel efficiency (with --results). From a results folder's index for --profile,
   the sum of the runs' seconds (their status records), the batch's wall time (last
   `finished` - first `started`), and efficiency = sum / (wall x jobs), where jobs is
   --jobs: the --jobs the batch ran with. 1.0 means every job was busy all the time;
   runs executed by several `dlbook run` commands count the time between them as idle,
   so the time with at least one run going is printed too.

    python benchmarks/bench_profile.py                          # generated data, < 1 min
    python benchmarks/bench_profile.py --data-dir data --results results --jobs 2
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from analysis import paths, plan, runner
from analysis.data import write_fake_cifar10
from analysis.results import DONE, ResultsMissing, load_index, read_json


def seconds(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def spread(times: list[float]) -> float:
    """Half the range of repeated measurements: how far their median may be off."""
    return (max(times) - min(times)) / 2


def python(code: str) -> str:
    """Run `code` in a fresh interpreter; return what it printed."""
    return subprocess.run([sys.executable, "-c", code], cwd=paths.PROJECT_ROOT, check=True,
                          capture_output=True, text=True).stdout


def kernel_start_stop() -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3",
                              extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def zero_epoch_runs(data_root: Path, n: int) -> list[plan.Run]:
    """The plan's run of train.ipynb with the notebook's defaults, 0 epochs, on the CPU,
    with seeds 0 .. n-1 (n runs of one cost, in that order)."""
    nb = paths.EXPERIMENTS_DIR / "train.ipynb"
    defaults = {k: v for k, v in plan.notebook_parameters(nb).items()
                if k not in plan.RUNNER_PARAMS}
    fingerprint = runner.data_fingerprint(data_root)
    runs = []
    for seed in range(n):
        params = {**defaults, "model": "lenet5", "epochs": 0, "device": "cpu", "seed": seed}
        runs.append(plan.Run(plan.run_key(nb, params, fingerprint), "train.ipynb", params,
                             ["bench-profile"], ["-"]))
    return runs


def fixed_cost(data_root: Path, repeats: int) -> None:
    runs = zero_epoch_runs(data_root, repeats + 1)
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        outcomes = runner.run_batch(runs, runner.Settings(Path(results), data_root), jobs=1,
                                    progress=False)
        wall = time.perf_counter() - start
        for outcome in outcomes:
            if outcome.status != "finished":
                sys.exit(f"bench_profile: a 0-epoch run {outcome.status}: {outcome.error}\n"
                         f"see {Path(results) / 'runs' / outcome.key / 'notebook.ipynb'}")
        kernels = [read_json(Path(results) / "runs" / o.key / "status.json").get("kernel", {})
                   for o in outcomes]
    reused = [k.get("earlier_runs") for k in kernels]
    if reused != list(range(len(outcomes))):
        print(f"bench_profile: warning: the runs did not share one kernel (earlier runs in "
              f"their kernel: {reused})", file=sys.stderr)
    cold = outcomes[0].seconds
    warm_runs = [o.seconds for o in outcomes[1:]]
    warm = statistics.median(warm_runs)

    run = runs[0]
    config = {k: run.params[k] for k in ("model", "epochs", "device")}
    call = f"train.train({config!r}, data_dir={str(data_root)!r}, progress=False)"
    twice = (f"import time; from analysis import train; {call}; start = time.perf_counter(); "
             f"{call}; print(time.perf_counter() - start)")
    pieces = [  # what, the samples, the run it is part of
        ("fresh interpreter importing torch", seconds(lambda: python("import torch"), repeats),
         "cold"),
        ("Jupyter kernel starting and stopping", seconds(kernel_start_stop, repeats), "cold"),
        ("train.train, 0 epochs, fresh interpreter", seconds(
            lambda: python(f"from analysis import train; {call}"), repeats), "cold"),
        ("train.train, 0 epochs, again in one", [float(python(twice)) for _ in range(repeats)],
         "warm"),
    ]
    of = {"cold": cold, "warm": warm}
    print(f"fixed cost per run, 0-epoch LeNet-5 runs through runner.run_batch (one job, "
          f"data {data_root}):")
    print(f"  cold (the slot's first run, starts its kernel) {cold:6.2f} s")
    print(f"  warm (median of the {len(warm_runs)} later runs, same kernel) {warm:6.2f} s "
          f"(+- {spread(warm_runs):.2f} s)")
    print(f"  batch wall time {wall:.2f} s for {len(outcomes)} runs (worker start and the "
          f"kernel's shutdown included)")
    print(f"for scale, measured here (median of {repeats}, +- half the range):")
    for what, samples, which in pieces:
        median = statistics.median(samples)
        print(f"  {what:42s} {median:6.2f} s +- {spread(samples):.2f}  "
              f"({median / of[which]:.0%} of a {which} run)")
    # A run's cost beyond the training call it makes; the cold run is measured once, so its
    # noise is the call's alone. Within the noise, no overhead is told apart from none.
    for which, runs_s, call_s in (("cold", [cold], pieces[2][1]),
                                  ("warm", warm_runs, pieces[3][1])):
        overhead = statistics.median(runs_s) - statistics.median(call_s)
        noise = spread(runs_s) + spread(call_s)
        what = f"{'runner + papermill + kernel beyond it, ' + which:42s}"
        if overhead <= noise:
            print(f"  {what} within noise (the difference, {overhead:+.2f} s, is inside the "
                  f"+- {noise:.2f} s the measurements vary by)")
        else:
            print(f"  {what} {overhead:6.2f} s +- {noise:.2f}  "
                  f"({overhead / of[which]:.0%} of a {which} run)")


def parallel_efficiency(results: Path, profile: str, jobs: int) -> None:
    try:
        index = load_index(profile, results)
    except ResultsMissing as e:
        sys.exit(f"bench_profile: {e}")
    records = [read_json(results / "runs" / r["key"] / "status.json") for r in index]
    ran = [s for s in records
           if (s.get("status") in DONE or s.get("status") == "failed")
           and s.get("started") and s.get("finished")]
    if not ran:
        sys.exit(f"bench_profile: no executed runs of profile {profile!r} under {results}; "
                 f"run `dlbook run --profile {profile} --results {results}` first")
    spans = sorted((datetime.fromisoformat(s["started"]).timestamp(),
                    datetime.fromisoformat(s["finished"]).timestamp()) for s in ran)
    total = sum(s.get("seconds") or 0 for s in ran)
    wall = max(end for _, end in spans) - spans[0][0]
    busy, covered_to = 0.0, float("-inf")  # the union of the runs' intervals
    for start, end in spans:
        busy += max(0.0, end - max(start, covered_to))
        covered_to = max(covered_to, end)
    print(f"profile {profile}: {len(ran)} of {len(records)} planned runs executed, "
          f"results {results}")
    print(f"sum of run times {total:.0f} s, wall time {wall:.0f} s (first start to last "
          f"finish; timestamps to the second), jobs {jobs}")
    print(f"time with at least one run going {busy:.0f} s")
    if wall > 0:
        print(f"parallel efficiency: {total / (wall * jobs):.2f} "
              f"(sum / (wall x jobs); over the busy time: {total / (busy * jobs):.2f})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None,
                   help="folder holding cifar-10-batches-py/ for the fixed-cost runs "
                   "(default: a small generated set, written to a temporary folder)")
    p.add_argument("--repeats", type=int, default=3,
                   help="warm 0-epoch runs (after one cold one) and reference "
                   "measurements to take the median of; 0 skips the fixed cost (default 3)")
    p.add_argument("--results", default=None,
                   help="a results folder to report the parallel efficiency of "
                   "(default: none, fixed cost only)")
    p.add_argument("--profile", default="cpu", choices=plan.PROFILES,
                   help="whose index to read under --results (default cpu)")
    p.add_argument("--jobs", type=int, default=int(os.environ.get(paths.JOBS_ENV, "1")),
                   help=f"the --jobs the batch ran with (default ${paths.JOBS_ENV} or 1)")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.repeats < 0:
        p.error("--jobs must be at least 1 and --repeats at least 0")

    if args.repeats:
        if args.data_dir:
            fixed_cost(paths.data_dir(args.data_dir), args.repeats)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                fixed_cost(write_fake_cifar10(Path(tmp)), args.repeats)
    if args.results:
        if args.repeats:
            print()
        parallel_efficiency(paths.results_dir(args.results), args.profile, args.jobs)


if __name__ == "__main__":
    main()
