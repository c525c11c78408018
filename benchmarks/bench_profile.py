"""What a profile's runs cost beyond their training: the fixed cost of one run, and how
well a batch of runs kept its jobs busy.

1. Fixed cost. A 0-epoch LeNet-5 run goes through the real runner path
   (`runner.execute`: lock, papermill, a fresh kernel, train.ipynb, the status record)
   --repeats times into a temporary results folder; the median is the price every run
   of a profile pays before its first epoch. Measured in the same process, for scale:
   a fresh interpreter importing torch, a Jupyter kernel starting and stopping, and the
   notebook's training call (`train.train`, 0 epochs) in a fresh interpreter. The run's
   cost over that last one is what the runner and papermill add.

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


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def python(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], cwd=paths.PROJECT_ROOT, check=True,
                   capture_output=True)


def kernel_start_stop() -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3",
                              extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def zero_epoch_run(data_root: Path) -> plan.Run:
    """The plan's run of train.ipynb with the notebook's defaults, 0 epochs, on the CPU."""
    nb = paths.EXPERIMENTS_DIR / "train.ipynb"
    params = {k: v for k, v in plan.notebook_parameters(nb).items()
              if k not in plan.RUNNER_PARAMS}
    params.update(model="lenet5", epochs=0, device="cpu")
    key = plan.run_key(nb, params, runner.data_fingerprint(data_root))
    return plan.Run(key, "train.ipynb", params, ["bench-profile"], ["-"])


def fixed_cost(data_root: Path, repeats: int) -> None:
    run = zero_epoch_run(data_root).record()
    with tempfile.TemporaryDirectory() as results:
        def one_run():
            outcome = runner.execute(run, Path(results), data_root, force=True)
            if outcome.status != "finished":
                sys.exit(f"bench_profile: the 0-epoch run {outcome.status}: {outcome.error}\n"
                         f"see {Path(results) / 'runs' / run['key'] / 'notebook.ipynb'}")

        per_run = median_seconds(one_run, repeats)
    config = {k: run["params"][k] for k in ("model", "epochs", "device")}
    train_call = (f"from analysis import train; "
                  f"train.train({config!r}, data_dir={str(data_root)!r}, progress=False)")
    pieces = [
        ("fresh interpreter importing torch", median_seconds(
            lambda: python("import torch"), repeats)),
        ("Jupyter kernel starting and stopping", median_seconds(kernel_start_stop, repeats)),
        ("train.train, 0 epochs, fresh interpreter", median_seconds(
            lambda: python(train_call), repeats)),
    ]
    print(f"fixed cost per run: {per_run:.2f} s (median of {repeats} 0-epoch LeNet-5 runs "
          f"through runner.execute, data {data_root})")
    print("for scale, measured here (median of the same number):")
    for what, seconds in pieces:
        print(f"  {what:42s} {seconds:6.2f} s  ({seconds / per_run:.0%} of a run)")
    overhead = per_run - pieces[-1][1]
    print(f"  {'runner + papermill beyond the training call':42s} {overhead:6.2f} s  "
          f"({overhead / per_run:.0%} of a run)")


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
                   help="0-epoch runs (and reference measurements) to take the median of; "
                   "0 skips the fixed cost (default 3)")
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
