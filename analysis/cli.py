"""The `dlbook` command: run the plan, report its status, check the book, print model costs."""
import argparse
import os
import sys

from analysis.paths import JOBS_ENV
from analysis.plan import PROFILES


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
                        "full (reference protocols, 3 seeds, one GPU), auto (full with CUDA, "
                        "else cpu). Default: $DLBOOK_PROFILE or auto.")
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
                    help="profile whose results the chapters read "
                    "(default: $DLBOOK_PROFILE or auto)")
    sp.add_argument("--data-dir", metavar="DIR", default=None,
                    help="folder holding cifar-10-batches-py/, which Lab 1 reads "
                    "(default: $DLBOOK_DATA or ./data)")

    sp = sub.add_parser(
        "flops", help="parameters and multiply-accumulates of a model (fvcore)",
        description="Parameters and multiply-accumulates (fvcore) of one image through a "
        "model, grouped as --by says, with the operators fvcore counts as zero.")
    sp.add_argument("model", help="lenet5, resnet20, plain20, resnet20_separable, "
                    "squeezenet1_0 or alexnet")
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
        from analysis import runner

        return runner.cli(args)
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


if __name__ == "__main__":
    sys.exit(main())
