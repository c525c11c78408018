"""Tiny notebooks and plans for the plan and runner tests: each runs in a second or two."""
import textwrap
from pathlib import Path

import nbformat
import yaml

from analysis import plan


def make_notebook(folder, name, body, params="run_dir = 'x'\ndata_dir = None\nvalue = 1\n"):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(textwrap.dedent(body))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, folder / name)
    return folder / name


# The needed experiment's notebook: "trains" a model, writing what it was given and when.
# `extra` code runs before it writes; it may add to `out`.
MAKE = """
    import time
    from analysis import artifacts
    out = {{"model": model, "value": value, "seed": seed, "start": time.time()}}
    {extra}
    out["end"] = time.time()
    artifacts.write(run_dir, "out", out)
"""
# The dependent notebook reads the run it needs through results_dir, which the runner
# injects without the notebook declaring it.
LOOK = """
    import json, pathlib, time
    from analysis import artifacts
    start = time.time()
    {extra}
    needed = pathlib.Path(results_dir) / "runs" / trained_run
    artifacts.write(run_dir, "out", {{"seen": json.loads((needed / "out.json").read_text()),
                                   "start": start}})
"""


def dependency_plan(folder, make_extra: str = "", look_extra: str = "",
                    models=("a", "b")) -> tuple[dict, Path]:
    """A plan whose `landscape` runs each need the `pair` run of the same model and seed;
    its notebooks and plan.yaml written to `folder`. Returns the plan and its file."""
    make_notebook(folder, "make.ipynb", MAKE.format(extra=_indent(make_extra)),
                  params="run_dir = 'x'\ndata_dir = None\nmodel = 'a'\nvalue = 1\nseed = 0\n")
    make_notebook(folder, "look.ipynb", LOOK.format(extra=_indent(look_extra)),
                  params="run_dir = 'x'\ndata_dir = None\nmodel = 'a'\nseed = 0\n"
                  "trained_run = None\n")
    the_plan = {
        "profiles": {p: {"seeds": [0]} for p in plan.PROFILES},
        "experiments": {
            "pair": {"notebook": "make.ipynb", "questions": ["q-pair"],
                     "grid": {"model": ["a", "b"]}},
            "landscape": {"notebook": "look.ipynb", "questions": ["q-look"],
                          "needs": {"experiment": "pair", "match": ["model", "seed"]},
                          "grid": {"model": list(models)}},
        },
    }
    return the_plan, write_plan(folder, the_plan)


def write_plan(folder, the_plan: dict) -> Path:
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(the_plan, sort_keys=False))
    return path


def _indent(code: str) -> str:
    """`code` at the indentation of `{extra}` in MAKE and LOOK (which are dedented)."""
    return textwrap.indent(textwrap.dedent(code).strip(), "    ").lstrip()
