"""`dlbook check` on small books built in tmp_path: a clean one passes, each
planted mistake is reported at its file and line. Static checks run without
a kernel; the execution checks share two module-level runs (one kernel per
chapter) to stay fast."""
import argparse
import json
import shutil
import textwrap

import nbformat
import pytest

from analysis import book

MINI_BOOK = {
    "_quarto.yml": """
        project:
          type: book
          execute-dir: project
        book:
          title: "Mini book"
          chapters:
            - index.qmd
            - part: "Labs"
              chapters:
                - book/lab1.qmd
        execute:
          echo: false
          freeze: false
        format: html
        """,
    "index.qmd": """
        # Preface {.unnumbered}

        This mini book answers one lab question (@sec-lab1-g) and one statement
        (@sec-tf-01). Mail someone@example.com; `@fig-in-code` is code.
        <!-- @fig-in-a-comment is not rendered -->
        """,
    "book/lab1.qmd": """
        ---
        title: "Lab 1"
        ---

        ```{python}
        #| include: false
        import json
        import os
        from pathlib import Path

        import matplotlib.pyplot as plt
        import pandas as pd

        history = json.loads((Path(os.environ["DLBOOK_RESULTS"]) / "history.json").read_text())
        ```

        ## Training curves {#sec-lab1-g}

        On the `{python} os.environ["DLBOOK_PROFILE"]` profile the best validation
        accuracy is `{python} f"{max(history['val_acc']):.2f}"` (@fig-lab1-g-curves,
        [-@tbl-lab1-g-summary]). @Fig-lab1-g-pair shows loss and accuracy side by
        side: loss in @fig-lab1-g-pair-1, accuracy in [@fig-lab1-g-pair-2; @eq-gap].

        ```{python}
        #| label: fig-lab1-g-curves
        #| fig-cap: "Validation accuracy per epoch (see also @tbl-lab1-g-summary)."
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(history["val_acc"])
        ax.set_xlabel("epoch")
        ```

        ```{python}
        #| label: fig-lab1-g-pair
        #| fig-cap: "Loss and accuracy."
        #| fig-subcap:
        #|   - "Loss"
        #|   - "Accuracy"
        #| layout-ncol: 2
        for key in ("val_loss", "val_acc"):
            fig, ax = plt.subplots(figsize=(3, 2))
            ax.plot(history[key])
        ```

        ```{python}
        #| label: tbl-lab1-g-summary
        #| tbl-cap: "Best epoch."
        pd.DataFrame({"epoch": [history["val_acc"].index(max(history["val_acc"]))],
                      "val_acc": [max(history["val_acc"])]})
        ```

        $$ \\text{gap} = \\text{train} - \\text{val} $$ {#eq-gap}

        ## Batch norm, true or false {#sec-tf-01}

        ```python
        # display-only code, not a reference: @fig-not-a-ref
        ```
        """,
    "book/answers.yml": """
        - id: lab1-g
          answer: "Validation loss bottoms out early."
          experiments: [lenet-baseline]
          evidence: [fig-lab1-g-curves, tbl-lab1-g-summary]
        - id: tf-01
          verdict: false
          answer: "The learned shift moves the mean away from zero."
          experiments: []
          evidence: [sec-tf-01]
        """,
    "experiments/plan.yaml": """
        experiments:
          lenet-baseline: {notebook: train.ipynb}
        """,
}

HISTORY = {"val_acc": [0.3, 0.5, 0.6], "val_loss": [2.0, 1.5, 1.4]}

RAISING_CHAPTER = """
    # Raising {#sec-raising}

    ```{python}
    def divide(a, b):
        return a / b
    ```

    ```{python}
    x = 1
    y = divide(x, 0)
    ```

    ```{python}
    #| label: fig-never-drawn
    #| fig-cap: "Never drawn: the chapter stopped before."
    plt.plot([1])
    ```
    """

INLINE_CHAPTER = """
    # Inline {#sec-inline}

    ```{python}
    #| eval: false
    raise RuntimeError("never run")
    ```

    ```{python}
    #| error: true
    raise ValueError("shown, and allowed")
    ```

    The value is `{python} undefined_name`, and `{python} __import__("numpy").float64(0.5)`
    would print as a numpy repr.

    ```{python}
    #| label: tbl-inline-nothing
    #| tbl-cap: "Assigned, never shown."
    import pandas as pd
    table = pd.DataFrame({"a": [1]})
    ```
    """


def write_book(root, edits=None):
    """Write MINI_BOOK under `root`, after the (old, new) replacements that
    `edits` gives per file: {"book/lab1.qmd": [("@fig-a", "@fig-b")]}."""
    files = {path: textwrap.dedent(text).lstrip("\n") for path, text in MINI_BOOK.items()}
    for path, replacements in (edits or {}).items():
        for old, new in replacements:
            assert old in files[path], f"{old!r} not in {path}"
            files[path] = files[path].replace(old, new)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def results_dir(root):
    results = root / "results"
    results.mkdir(exist_ok=True)
    (results / "history.json").write_text(json.dumps(HISTORY))
    return results


def line_of(root, file, needle):
    """The line of `file` where `needle` first occurs, to compare with reports."""
    for n, line in enumerate((root / file).read_text().splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {file}")


def static_problems(root):
    return [str(p) for p in book.check(root, execute=False)]


# --- Static checks.

def test_clean_book_passes_static_checks(tmp_path):
    assert static_problems(write_book(tmp_path)) == []


def test_reads_labels_and_references_the_way_quarto_does(tmp_path):
    root = write_book(tmp_path)
    assert [p.name for p in book.chapters(root)] == ["index.qmd", "lab1.qmd"]
    assert set(book.labels(root)) == {
        "sec-lab1-g", "sec-tf-01", "fig-lab1-g-curves", "fig-lab1-g-pair",
        "fig-lab1-g-pair-1", "fig-lab1-g-pair-2", "tbl-lab1-g-summary", "eq-gap"}
    refs = [(r.key, r.label) for r in book.references(root)]
    # Not references: the email, code, the comment, the display-only block.
    assert refs == [
        ("sec-lab1-g", "sec-lab1-g"), ("sec-tf-01", "sec-tf-01"),
        ("fig-lab1-g-curves", "fig-lab1-g-curves"), ("tbl-lab1-g-summary", "tbl-lab1-g-summary"),
        ("Fig-lab1-g-pair", "fig-lab1-g-pair"), ("fig-lab1-g-pair-1", "fig-lab1-g-pair-1"),
        ("fig-lab1-g-pair-2", "fig-lab1-g-pair-2"), ("eq-gap", "eq-gap"),
        ("tbl-lab1-g-summary", "tbl-lab1-g-summary"),  # in the fig-cap
    ]


def test_planted_broken_reference_is_reported_with_file_and_line(tmp_path):
    root = write_book(tmp_path, {"book/lab1.qmd": [
        ("(@fig-lab1-g-curves,", "(@fig-lab1-g-curvs,")]})
    line = line_of(root, "book/lab1.qmd", "@fig-lab1-g-curvs")
    assert static_problems(root) == [
        f"book/lab1.qmd:{line}: @fig-lab1-g-curvs does not resolve to any label; "
        "did you mean fig-lab1-g-curves?"]


def test_label_with_underscore_is_reported(tmp_path):
    root = write_book(tmp_path, {"book/lab1.qmd": [
        ("## Batch norm, true or false {#sec-tf-01}",
         "## Batch norm {#sec-tf-01}\n\n### BN {#sec-bn_1}")]})
    line = line_of(root, "book/lab1.qmd", "{#sec-bn_1}")
    assert static_problems(root) == [
        f"book/lab1.qmd:{line}: label sec-bn_1 must not contain `_` (use `-`)"]


def test_duplicate_and_upper_case_labels_are_reported(tmp_path):
    root = write_book(tmp_path, {"book/lab1.qmd": [
        ("{#sec-tf-01}", "{#sec-tf-01}\n\n### Again {#sec-lab1-g}\n\n### Caps {#sec-Caps}")]})
    first = line_of(root, "book/lab1.qmd", "{#sec-lab1-g}")
    again = line_of(root, "book/lab1.qmd", "### Again")
    caps = line_of(root, "book/lab1.qmd", "{#sec-Caps}")
    assert static_problems(root) == [
        f"book/lab1.qmd:{again}: label sec-lab1-g is defined twice (also at book/lab1.qmd:{first})",
        f"book/lab1.qmd:{caps}: label sec-Caps must be lower case"]


def test_figure_without_caption_is_reported(tmp_path):
    root = write_book(tmp_path, {"book/lab1.qmd": [("#| fig-cap: \"Loss and accuracy.\"\n", "")]})
    line = line_of(root, "book/lab1.qmd", "#| label: fig-lab1-g-pair")
    assert static_problems(root) == [
        f"book/lab1.qmd:{line}: fig-lab1-g-pair has no `#| fig-cap:` "
        "(Quarto numbers only captioned figures and tables)"]


def test_missing_chapter_is_reported(tmp_path):
    root = write_book(tmp_path, {"_quarto.yml": [
        ("- book/lab1.qmd", "- book/lab1.qmd\n        - book/lab2.qmd")]})
    line = line_of(root, "_quarto.yml", "book/lab2.qmd")
    assert static_problems(root) == [f"_quarto.yml:{line}: chapter book/lab2.qmd does not exist"]


def test_home_page_must_be_listed_and_next_to_config(tmp_path):
    root = write_book(tmp_path, {"_quarto.yml": [("    - index.qmd\n", "")]})
    (root / "index.qmd").unlink()
    problems = static_problems(root)
    assert any(p.startswith("index.qmd: not found: the home page") for p in problems), problems
    assert any("index.qmd is not listed" in p for p in problems), problems


def test_not_a_book_and_missing_config_are_reported(tmp_path):
    root = write_book(tmp_path, {"_quarto.yml": [("type: book", "type: website")]})
    assert static_problems(root) == ["_quarto.yml:1: project: type: is 'website', not book"]
    (root / "_quarto.yml").unlink()
    assert static_problems(root) == [
        "_quarto.yml: not found: a Quarto book needs _quarto.yml at its root"]


def test_link_to_unlisted_chapter_is_reported(tmp_path):
    root = write_book(tmp_path, {"index.qmd": [
        ("(@sec-tf-01).", "(@sec-tf-01), see [lab 1](book/lab1.qmd#sec-lab1-g) and "
                          "[draft](book/draft.qmd).")]})
    (root / "book/draft.qmd").write_text("# Draft\n")
    line = line_of(root, "index.qmd", "[draft]")
    assert static_problems(root) == [
        f"index.qmd:{line}: link book/draft.qmd: book/draft.qmd is not a chapter in "
        "_quarto.yml, so Quarto cannot resolve the link"]


def test_embed_of_missing_notebook_is_reported(tmp_path):
    root = write_book(tmp_path, {"index.qmd": [
        ("<!--", "{{< embed /notebooks/nb.ipynb#fig-x >}}\n\n<!--")]})
    line = line_of(root, "index.qmd", "embed")
    assert static_problems(root) == [
        f"index.qmd:{line}: embed /notebooks/nb.ipynb#fig-x: /notebooks/nb.ipynb does not exist"]


def test_reference_to_a_figure_of_the_unnumbered_home_page_is_reported(tmp_path):
    root = write_book(tmp_path, {
        "index.qmd": [("<!--", "::: {#fig-cover}\n![](cover.png)\n\nThe cover.\n:::\n\n<!--")],
        "book/lab1.qmd": [("## Batch norm", "See @fig-cover.\n\n## Batch norm")]})
    line = line_of(root, "book/lab1.qmd", "@fig-cover")
    assert static_problems(root) == [
        f"book/lab1.qmd:{line}: @fig-cover points into index.qmd, which is unnumbered: Quarto "
        "cannot number it; move it to a chapter"]


def test_embedded_notebook_cells_define_labels_and_need_stored_output(tmp_path):
    root = write_book(tmp_path, {"index.qmd": [
        ("<!--", "{{< embed /notebooks/nb.ipynb#fig-drawn >}}\n\n"
                 "{{< embed /notebooks/nb.ipynb#fig-never-run >}}\n\n"
                 "{{< embed /notebooks/nb.ipynb#fig-absent >}}\n\n<!--")]})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("#| label: fig-drawn\nplot()", outputs=[
            nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]),
        nbformat.v4.new_code_cell("#| label: fig-never-run\nplot()")])
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks/nb.ipynb")
    assert "fig-drawn" in book.labels(root)
    never_run = line_of(root, "index.qmd", "#fig-never-run")
    absent = line_of(root, "index.qmd", "#fig-absent")
    assert static_problems(root) == [
        f"index.qmd:{never_run}: embed /notebooks/nb.ipynb#fig-never-run: the cell has no stored "
        "output (Quarto embeds stored outputs; run the notebook and save it)",
        f"index.qmd:{absent}: embed /notebooks/nb.ipynb#fig-absent: no cell with "
        "`#| label: fig-absent` in /notebooks/nb.ipynb"]


def test_answer_evidence_missing_is_reported(tmp_path):
    root = write_book(tmp_path, {"book/answers.yml": [
        ("tbl-lab1-g-summary]", "tbl-lab1-g-sumary]")]})
    assert static_problems(root) == [
        "book/answers.yml:1: answer lab1-g: evidence tbl-lab1-g-sumary is not a label in the "
        "book; did you mean tbl-lab1-g-summary?"]


def test_true_false_record_without_verdict_is_reported(tmp_path):
    root = write_book(tmp_path, {"book/answers.yml": [("  verdict: false\n", "")]})
    line = line_of(root, "book/answers.yml", "id: tf-01")
    assert static_problems(root) == [
        f"book/answers.yml:{line}: answer tf-01 needs `verdict: true` or `verdict: false`, "
        "not None"]


def test_answer_records_are_checked_against_questions_plan_and_sections(tmp_path):
    root = write_book(tmp_path, {"book/answers.yml": [
        ("experiments: [lenet-baseline]", "experiments: [lenet-basline]"),
        ("- id: tf-01", "- id: lab1-a\n  answer: \"x\"\n- id: lab1-gg\n  answer: \"x\"\n"
                        "- id: lab1-g\n  answer: \"again\"\n- id: tf-01")]})
    assert static_problems(root) == [
        "book/answers.yml:1: answer lab1-g: experiment lenet-basline is not in "
        "experiments/plan.yaml; did you mean lenet-baseline?",
        "book/answers.yml:5: answer lab1-a: the book has no section {#sec-lab1-a} for it",
        "book/answers.yml:7: unknown question id 'lab1-gg'; did you mean lab1-g?",
        "book/answers.yml:9: answer lab1-g is given twice (also at book/answers.yml:1)"]
    complete = book.check(root, execute=False, complete=True)
    assert str(complete[-1]).startswith("book/answers.yml: no answer record for tf-02, tf-03")


def test_cli_prints_summary_or_problems(tmp_path, monkeypatch, capsys):
    args = argparse.Namespace(no_execute=True, results=None, profile=None, data_dir=None)
    monkeypatch.chdir(write_book(tmp_path / "ok"))
    assert book.cli(args) == 0
    assert "book OK: 2 chapters, 8 labels, 9 references, 2 answers" in capsys.readouterr().out
    monkeypatch.chdir(write_book(tmp_path / "bad", {"book/lab1.qmd": [("[-@tbl", "[-@tbl-x")]}))
    assert book.cli(args) == 1
    assert "@tbl-x-lab1-g-summary does not resolve" in capsys.readouterr().out


# --- Execution: each chapter's cells and inline values in a fresh kernel.

@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = write_book(tmp_path_factory.mktemp("clean"))
    return book.check(root, results_dir=results_dir(root), profile="smoke", timeout=120)


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """One book with three broken chapters, run once for the tests below."""
    root = tmp_path_factory.mktemp("broken")
    write_book(root, {
        "book/lab1.qmd": [('ax.set_xlabel("epoch")', "plt.close(fig)"),
                          ('for key in ("val_loss", "val_acc"):', 'for key in ["val_loss"]:')],
        "_quarto.yml": [("- book/lab1.qmd", "- book/lab1.qmd\n        - book/raise.qmd"
                                            "\n        - book/inline.qmd")]})
    for name, text in (("raise", RAISING_CHAPTER), ("inline", INLINE_CHAPTER)):
        (root / f"book/{name}.qmd").write_text(textwrap.dedent(text).lstrip("\n"))
    problems = book.check(root, results_dir=results_dir(root), profile="smoke", timeout=120)
    return root, [str(p) for p in problems]


def test_clean_book_runs_with_every_figure_drawn(clean_run):
    assert clean_run == []


def test_figure_cell_without_figure_is_reported(broken_run):
    root, problems = broken_run
    curves = line_of(root, "book/lab1.qmd", "#| label: fig-lab1-g-curves")
    pair = line_of(root, "book/lab1.qmd", "#| label: fig-lab1-g-pair")
    assert [p for p in problems if p.startswith("book/lab1.qmd")] == [
        f"book/lab1.qmd:{curves}: fig-lab1-g-curves produced no figure "
        "(no image output; was the figure closed, or never drawn?)",
        f"book/lab1.qmd:{pair}: fig-lab1-g-pair has 2 subcaptions but produced 1 image(s)"]


def test_raising_cell_is_reported_at_its_line(broken_run):
    root, problems = broken_run
    line = line_of(root, "book/raise.qmd", "y = divide(x, 0)")
    assert [p for p in problems if p.startswith("book/raise.qmd")] == [
        f"book/raise.qmd:{line}: python cell raised ZeroDivisionError: division by zero; "
        "nothing after it ran (1 cell(s), 0 inline value(s))"]


def test_inline_expression_error_is_reported(broken_run):
    root, problems = broken_run
    line = line_of(root, "book/inline.qmd", "undefined_name")
    table = line_of(root, "book/inline.qmd", "#| label: tbl-inline-nothing")
    # The `eval: false` cell does not run; the `error: true` cell may raise.
    assert [p for p in problems if p.startswith("book/inline.qmd")] == [
        f"book/inline.qmd:{line}: inline `{{python}} undefined_name` raised "
        "NameError: name 'undefined_name' is not defined",
        f"book/inline.qmd:{line}: inline `{{python}} __import__(\"numpy\").float64(0.5)` "
        "renders as 'np.float64(0.5)'; convert it with int(), float() or a formatter",
        f"book/inline.qmd:{table}: tbl-inline-nothing produced no output to show as a table"]


def test_quarto_render(tmp_path):
    if shutil.which("quarto") is None:
        pytest.skip("quarto not on PATH: install Quarto >= 1.9 (pip install quarto-cli) "
                    "to render the book in tests")
    root = write_book(tmp_path)
    code, log = book.render(root, "smoke", results_dir=results_dir(root), to="html",
                            timeout=600)
    assert code == 0, log
    assert book.unresolved(log) == [], log


def test_unresolved_picks_the_render_failures_quarto_only_logs():
    log = ("[1/2] book/lab1.qmd\nWARNING (...) Unable to resolve crossref @fig-x\n"
           "WARN: Unable to resolve link target: draft.qmd\nOutput created: _book/index.html\n")
    assert book.unresolved(log) == ["WARNING (...) Unable to resolve crossref @fig-x",
                                    "WARN: Unable to resolve link target: draft.qmd"]


def test_render_without_quarto_reports_instead_of_raising(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert book.render(write_book(tmp_path)) == (127, "quarto not on PATH")


@pytest.mark.parametrize("x, text", [
    (0.0123456, "0.0123"), (45.64, "45.6"), (0.5, "0.5"), (1.0, "1"), (100, "100"),
    (12345, "12,300"), (999.7, "1,000"), (5e-4, "5e-4"), (1.5e-5, "1.5e-5"),
    (3.430623e15, "3.43e15"), (9.9996e-5, "1e-4"), (0, "0"), (-0.25, "-0.25"),
])
def test_prose_numbers_are_plain(x, text):
    from analysis.plots import num

    assert num(x) == text


@pytest.mark.parametrize("x, text", [
    (0.036, "3.6 points"), (0.01, "1.0 point"), (-0.012, "-1.2 points"), (0.0004, "0.0 points"),
])
def test_accuracy_differences_read_as_points(x, text):
    from analysis.plots import pts

    assert pts(x) == text


def test_sweep_marks_failed_runs_instead_of_dropping_them():
    import matplotlib.pyplot as plt
    import pandas as pd

    from analysis import plots

    runs = pd.DataFrame({"lr": [0.01, 0.1, 1.0, 3.0], "acc": [0.5, 0.6, 0.1, float("nan")],
                         "status": ["finished", "finished", "collapsed", "diverged"]})
    fig = plots.sweep(runs, x="lr", y="acc", logx=True)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "collapsed" in labels and "diverged" in labels
    marked = {c.get_label(): c.get_offsets().data.tolist() for c in ax.collections}
    assert marked["collapsed"] == [[1.0, 0.1]]  # at its accuracy
    assert marked["diverged"][0][0] == 3.0  # on the axis: it has no accuracy
    plt.close(fig)


def test_counts_agree_with_their_number():
    from analysis.plots import count

    assert [count(1, "seed"), count(3, "seed"), count(0, "run")] == ["1 seed", "3 seeds", "0 runs"]


def test_tables_for_reading_show_accuracies_in_percent_under_readable_names():
    import pandas as pd

    from analysis.plots import percent

    table = percent(pd.DataFrame({"lr": [0.1], "best_val_acc": [0.6234], "gap": [0.0123],
                                  "seed": [0]}))
    assert table.to_dict("records") == [{"lr": 0.1, "best val acc": 62.3, "gap (points)": 1.2,
                                         "seed": 0}]


@pytest.mark.parametrize("flags, start", [
    ([True, True], "The runs read the official"), ([False], "The runs read a copy"),
    ([True, None], "Not every run recorded"), ([True, False], "Some runs read"),
])
def test_data_note_names_which_files_the_runs_read(flags, start):
    import pandas as pd

    from analysis import results

    assert results.data_note(pd.Series(flags, dtype=object)).startswith(start)


def test_kernels_get_absolute_folders_whatever_the_user_typed(tmp_path, monkeypatch):
    from analysis import book

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLBOOK_DATA", "relative/data")
    env = book.kernel_env(results_dir="res", profile="cpu")
    assert env["DLBOOK_DATA"] == str(tmp_path / "relative" / "data")
    assert env["DLBOOK_RESULTS"] == str(tmp_path / "res") and env["DLBOOK_PROFILE"] == "cpu"
    assert book.kernel_env(data_dir="d")["DLBOOK_DATA"] == str(tmp_path / "d")
