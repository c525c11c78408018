"""The `dlbook` command: run the plan, report its status, check the book, print model costs."""
import argparse
import os
import sys

from analysis.paths import JOBS_ENV

PROFILES = ("smoke", "cpu", "full", "auto")


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
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp):
        sp.add_argument("--profile", choices=PROFILES, default=None,
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

    sp = sub.add_parser("run", help="execute the runs the plan needs (cached runs are skipped)")
    common(sp)
    sp.add_argument("--jobs", "-j", type=int, default=os.environ.get(JOBS_ENV, "1"),
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

    sp = sub.add_parser("status", help="list what the plan needs and what exists")
    common(sp)

    sp = sub.add_parser("check", help="verify the book without Quarto: chapters, labels, "
                        "cross-references, answers, and that every chapter's code runs")
    sp.add_argument("--no-execute", action="store_true",
                    help="static checks only (do not run chapter code)")
    sp.add_argument("--results", metavar="DIR", default=None,
                    help="results folder the chapters read "
                    "(default: $DLBOOK_RESULTS or ./results)")
    sp.add_argument("--profile", choices=PROFILES, default=None,
                    help="profile whose results the chapters read "
                    "(default: $DLBOOK_PROFILE or auto)")

    sp = sub.add_parser("flops", help="parameters and multiply-accumulates of a model (fvcore)")
    sp.add_argument("model", help="lenet5, resnet20, plain20, resnet20_separable, "
                    "squeezenet1_0 or alexnet")
    sp.add_argument("--input", metavar="CxHxW", default=None,
                    help="input shape without batch (default: 3x32x32, or 3x224x224 for "
                    "squeezenet1_0/alexnet)")
    sp.add_argument("--by", choices=("module", "stage"), default="stage",
                    help="one row per leaf module or per top-level stage (default stage)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "status"):
        from analysis import runner

        return runner.cli(args)
    if args.command == "check":
        from analysis import book

        return book.cli(args)
    if args.command == "flops":
        from analysis import flops

        return flops.cli(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
