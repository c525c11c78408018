"""The `dlbook` command: run the plan, report its status, check the book, print model costs."""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from analysis.models import MODELS
from analysis.paths import JOBS_ENV, RESULTS_ENV
from analysis.plan import PROFILES, TRAINED_RUN


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dlbook")
    except PackageNotFoundError:
        return "(not installed)"


def _jobs(text: str) -> int:
    """--jobs (its default comes from $DLBOOK_JOBS): a whole number >= 1."""
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number (set by --jobs or ${JOBS_ENV})") from None
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"{jobs} must be at least 1 (--jobs or ${JOBS_ENV})")
    return jobs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dlbook",
        description="Build the CNN-training book: run the experiments it needs, "
        "check it, and analyse model costs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Typical use:\n"
        "  dlbook run --profile smoke      # every experiment, tiny and fast\n"
        "  dlbook status --profile cpu     # what the cpu profile still needs\n"
        "  dlbook check                    # verify the book without Quarto\n"
        "  dlbook flops resnet20 --by stage",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp):
        sp.add_argument("--profile", choices=(*PROFILES, "auto"), default=None,
                        help="smoke (minutes, tiny data), cpu (real data, <=45 min on 2 cores), "
                        "full (reference protocols, 3-10 seeds, one GPU), auto (full with CUDA, "
                        "else cpu). Default: Quarto's --profile when it names one, else "
                        "$DLBOOK_PROFILE, else auto.")
        sp.add_argument("--only", nargs="+", metavar="ID", default=None,
                        help="question ids (lab1-g) or experiment names to restrict to")
        sp.add_argument("--data-dir", metavar="DIR", default=None,
                        help="folder holding cifar-10-batches-py/ "
                        "(default: $DLBOOK_DATA or ./data)")
        sp.add_argument("--results", metavar="DIR", default=None,
                        help="results folder (default: $DLBOOK_RESULTS or ./results)")

    p.subcommands = sub.choices  # name -> parser, for errors in a subcommand's own usage
    sp = sub.add_parser(
        "run", help="execute the runs the plan needs (cached runs are skipped)",
        description="Expand experiments/plan.yaml for a profile and execute every run that is "
        "not cached yet with papermill; each finished run lands in RESULTS/runs/<key>/. "
        "Interrupted? Run the same command again: finished runs are kept.")
    common(sp)
    sp.add_argument("--jobs", "-j", type=_jobs, default=os.environ.get(JOBS_ENV, "1"),
                    help=f"runs executed at once (default ${JOBS_ENV} or 1; several LeNet runs "
                    "share one GPU well)")
    sp.add_argument("--force", action="store_true", help="re-execute runs even if finished")
    sp.add_argument("--dask", metavar="ADDRESS", default=None,
                    help="submit runs to a Dask scheduler (tcp://host:8786) instead of local "
                    "processes; workers need this package and the data")
    sp.add_argument("--seeds", nargs="+", type=int, metavar="S", default=None,
                    help="run only these seeds of the profile's seeds (e.g. a first look with "
                    "--seeds 0 when GPU time is short; the rest can follow later)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--thaw", metavar="DIR", default=None,
                    help="Quarto's freeze folder (_freeze): emptied when the results or the "
                    "book's code changed since it was filled, so that a render re-executes "
                    "exactly the chapters whose inputs changed (the book's pre-render uses it)")

    sp = sub.add_parser(
        "status", help="list what the plan needs and what exists",
        description="One line per planned run: cached, missing or failed, and whether an "
        "older result of the same parameters exists (stale: code, notebook or data changed). "
        "Changes nothing.")
    common(sp)

    sp = sub.add_parser(
        "check", help="verify the book without Quarto: chapters, labels, "
        "cross-references, answers, and that every chapter's code runs",
        description="Verify the book without Quarto: every chapter in _quarto.yml exists, "
        "labels are unique, every @reference resolves, book/answers.yml is complete and "
        "points at real evidence, and every chapter's code runs against the results.")
    sp.add_argument("--no-execute", action="store_true",
                    help="static checks only (do not run chapter code)")
    sp.add_argument("--results", metavar="DIR", default=None,
                    help="results folder the chapters read "
                    "(default: $DLBOOK_RESULTS or ./results)")
    sp.add_argument("--profile", choices=(*PROFILES, "auto"), default=None,
                    help="profile whose results the chapters read (default: Quarto's "
                    "--profile, else $DLBOOK_PROFILE, else auto)")
    sp.add_argument("--data-dir", metavar="DIR", default=None,
                    help="folder holding cifar-10-batches-py/, which Lab 1 reads "
                    "(default: $DLBOOK_DATA or ./data)")

    sp = sub.add_parser(
        "flops", help="parameters and multiply-accumulates of a model (fvcore)",
        description="Parameters and multiply-accumulates (fvcore) of one image through a "
        "model, grouped as --by says, with the operators fvcore counts as zero.")
    sp.add_argument("model", metavar="MODEL", help=f"one of {', '.join(MODELS)}")
    sp.add_argument("--input", metavar="CxHxW", default=None,
                    help="input shape without batch (default: 3x32x32, or 3x224x224 for "
                    "squeezenet1_0/alexnet)")
    sp.add_argument("--by", choices=("module", "layer", "block", "stage"), default="stage",
                    help="one row per leaf module, per weight layer (conv1, fire2, ...), per "
                    "block, or per stage: the modules computed at one spatial resolution, "
                    "between two downsampling steps (default stage)")
    return p


def parse(argv=None) -> argparse.Namespace:
    """The arguments; a flag the subcommand does not know gets that subcommand's usage and
    the closest flag it does know (argparse alone would print the top-level usage)."""
    import difflib

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = parser.subcommands[args.command]
        flags = [f for action in sub._actions for f in action.option_strings]
        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(
            u.split("=")[0], flags, n=1)) else u for u in unknown]
        sub.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def main(argv=None) -> int:
    try:
        return _dispatch(parse(argv))
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args) -> int:
    if args.command in ("run", "status"):
        return run_or_status(args)
    if args.command == "check":
        from analysis import book

        return book.cli(args)
    if args.command == "flops":
        from analysis import flops

        try:
            return flops.cli(args)
        except ValueError as e:  # an unknown model or a malformed --input
            print(f"dlbook flops: {e}", file=sys.stderr)
            return 2
        except RuntimeError as e:  # torch refused the input shape
            default = "x".join(map(str, flops.default_input(args.model)))
            print(f"dlbook flops: {args.model} cannot take an input of {args.input or default}: "
                  f"{str(e).splitlines()[0]}\nGive --input CxHxW with a shape it supports, "
                  f"such as its default {default}.", file=sys.stderr)
            return 2
    return 2


# ---------------------------------------------------------------- run and status

def run_or_status(args) -> int:
    """`dlbook run` and `dlbook status`: the plan for a profile, then the batch executed, or
    every run's state listed."""
    from analysis import plan, runner, store

    name = f"dlbook {args.command}"
    try:
        profile, settings, all_runs, selected = runner.prepare(
            args.profile, args.data_dir, args.results, args.only, getattr(args, "seeds", None),
            force=getattr(args, "force", False), download=args.command == "run")
    except (plan.PlanError, FileNotFoundError, ValueError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    results = settings.results
    if args.command == "status":
        print_status(status_rows(results, selected), profile, results)
        return 0
    print(f"dlbook run: profile {profile}, {len(selected)} runs, data {settings.data_root}, "
          f"results {results}", file=sys.stderr)
    if args.dask and args.jobs > 1:
        print(f"{name}: --jobs is ignored with --dask: the cluster's workers set how many "
              "runs execute at once", file=sys.stderr)
    start = time.time()
    try:
        store.write_index(results, profile, all_runs)
        outcomes = runner.run_batch(selected, settings, jobs=args.jobs, dask_address=args.dask,
                                    progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; finished runs are kept, and running the same command "
              "again resumes with the rest", file=sys.stderr)
        return 130
    except runner.SchedulerUnreachable as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{name}: cannot write the results folder {results}: {e}\n"
              f"Choose a writable folder with --results DIR or {RESULTS_ENV}=DIR.",
              file=sys.stderr)
        return 2
    print(summarize(outcomes, time.time() - start, results))
    if args.thaw:
        from analysis import paths

        if store.thaw(Path(args.thaw), paths.PROJECT_ROOT, results, profile):
            print(f"dlbook run: the book's inputs changed: emptied {args.thaw}, so Quarto "
                  "executes every chapter again", file=sys.stderr)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def summarize(outcomes: list, wall: float, results: Path) -> str:
    """What a batch did (its runner.Outcome list): counts, and each failed run's error."""
    counts = {s: sum(o.verdict == s for o in outcomes)
              for s in ("finished", "collapsed", "cached", "diverged", "failed")}
    ran = len(outcomes) - counts["cached"]
    collapsed = f", {counts['collapsed']} collapsed" if counts["collapsed"] else ""
    lines = [f"{len(outcomes)} runs: {ran} executed ({counts['finished']} finished{collapsed}, "
             f"{counts['diverged']} diverged, {counts['failed']} failed), "
             f"{counts['cached']} cached; wall time {wall:.1f} s"]
    if counts["collapsed"]:
        lines.append(f"  {_collapsed_note()}")
    for o in outcomes:
        if o.status == "failed":
            lines.append(f"  FAILED {o.key} ({', '.join(o.experiments)}): {o.error}\n"
                         f"    see {results / 'runs' / o.key / 'notebook.ipynb'}")
    return "\n".join(lines)


def status_rows(results: Path, runs: list) -> list[dict]:
    """Per planned run (a plan.Run): its state, cached (finished, collapsed or diverged),
    failed, missing, or pending (missing, and a run it needs is not finished: `waits` says
    which, and why if that one failed or diverged); its result; and how many stale runs are
    on disk (same notebook and parameters under another key: code, notebook, data or the
    run it needs changed)."""
    from analysis import runner
    from analysis.artifacts import read_json
    from analysis.results import DONE, collapsed

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
    names = {r.key: r.name for r in runs}
    rows = []
    for r in runs:
        record = read_json(results / "runs" / r.key / "status.json")
        st = record.get("status")
        state = "cached" if st in DONE else ("failed" if st == "failed" else "missing")
        if st == "finished" and collapsed(read_json(results / "runs" / r.key / "summary.json")
                                          .get("best_val_acc")):
            st = "collapsed"
        # What a missing run waits for: the runs it needs that are not finished.
        waits = "; ".join(f"{names.get(key, key)} ({need or 'missing'}"
                          f"{f': {error}' if need else ''})"
                          for key, need, error in runner.unmet_needs(r, results)
                          ) if state == "missing" else ""
        stale = by_params.get(_same_params(r.notebook, r.params), [])
        rows.append({"key": r.key, "run": r.name, "experiments": ",".join(r.experiments),
                     "state": "pending" if waits else state, "result": st or "",
                     "stale": len(stale), "seed": r.params.get("seed"),
                     "error": record.get("error") if st == "failed" else None,
                     "waits": waits or None})
    return rows


def _same_params(notebook: str, params: dict) -> tuple:
    """What a stale run shares with a planned one: the notebook and the parameters, but for
    the key of the run it needs (a run that read an older model is stale too)."""
    return notebook, json.dumps({k: v for k, v in params.items() if k != TRAINED_RUN},
                                sort_keys=True)


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
    collapsed = sum(r["result"] == "collapsed" for r in rows)
    pending = f"pending {states.count('pending')}, " if "pending" in states else ""
    print(f"cached {states.count('cached')}"
          f"{f' ({collapsed} collapsed)' if collapsed else ''}, missing "
          f"{states.count('missing')}, {pending}failed {states.count('failed')}, "
          f"stale {sum(r['stale'] > 0 for r in rows)}")
    if collapsed:
        print(_collapsed_note())


def _collapsed_note() -> str:
    from analysis.results import CHANCE_BAND

    return (f"collapsed: finished, but never above chance (best validation accuracy <= "
            f"{CHANCE_BAND}), which the book counts as a failed run like a diverged one")


if __name__ == "__main__":
    sys.exit(main())
