"""`quarto render` for the tests that render a book, when Quarto is installed."""
import shutil
import subprocess
import sys

import pytest

from analysis import book

# What Quarto logs, without failing, for a reference or link it cannot resolve.
RENDER_FAILURES = ("Unable to resolve crossref", "Unable to resolve link target")


def render(root, profile=None, *, results_dir=None, to=None, timeout=None) -> tuple[int, str]:
    """`quarto render` of the book at `root`, with this interpreter as QUARTO_PYTHON and
    the kernels' environment of `dlbook check`: (exit code, log). Skips the test when
    Quarto is not installed."""
    if shutil.which("quarto") is None:
        pytest.skip("quarto not on PATH: install Quarto >= 1.9 (pip install quarto-cli) "
                    "to render the book in tests")
    env = {**book.kernel_env(results_dir, profile), "QUARTO_PYTHON": sys.executable}
    done = subprocess.run(["quarto", "render", *(["--to", to] if to else [])], cwd=root,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def unresolved(log: str) -> list[str]:
    """The lines of a render log where Quarto could not resolve a reference or link."""
    return [line for line in log.splitlines() if any(f in line for f in RENDER_FAILURES)]
