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
        bibliography: references.bib
        execute:
          echo: false
          freeze: false
        format: html
        """,
    "index.qmd": """
        # Preface {.unnumbered}

        This mini book answers one lab question (@sec-lab1-g) and one statement
        (@sec-tf-01). LeNet-5 is from @lecun1998gradient [see also @he2016deep, p. 2].
        Mail someone@example.com; `@fig-in-code` is code.
        <!-- @fig-in-a-comment is not rendered -->
        """,
    "references.bib": """
        % Not an entry: @comment and @string are skipped.
        @string{ieee = "Proceedings of the IEEE"}
        @article{lecun1998gradient,
          author = {LeCun, Yann and Bottou, Léon and Bengio, Yoshua and Haffner, Patrick},
          title = {Gradient-Based Learning Applied to Document Recognition},
          journal = ieee, year = {1998}
        }
        @inproceedings{ he2016deep ,
          author = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
          title = {Deep Residual Learning for Image Recognition}, year = {2016}
        }
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

        from analysis import plots

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
        plots.table(pd.DataFrame({"epoch": [history["val_acc"].index(max(history["val_acc"]))],
                                  "val_acc": [max(history["val_acc"])]}))
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
          reason: The learned shift moves the mean
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

OUTPUT_CHAPTER = """
    # Output {#sec-output}

    ```{python}
    import matplotlib.pyplot as plt
    import pandas as pd
    from IPython.display import Markdown

    from analysis import plots

    note = ""
    ```

    Planted: `{python} note`, `{python} "**bold**"`; fine: `{python} Markdown("**bold**")`.

    ```{python}
    #| label: fig-output-wide
    #| fig-cap: "Wider than the column."
    fig, ax = plt.subplots(figsize=(9, 2))
    ax.plot([0, 1])
    ```

    ```{python}
    #| label: tbl-output-index
    #| tbl-cap: "Shows pandas' index."
    pd.DataFrame({"a": [1, 2]})
    ```

    ```{python}
    #| label: tbl-output-markdown
    #| tbl-cap: "Shows no index."
    plots.table(pd.DataFrame({"a": [1, 2]}))
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


def test_true_false_record_without_a_reason_is_reported(tmp_path):
    root = write_book(tmp_path, {"book/answers.yml": [
        ("  reason: The learned shift moves the mean\n", "")]})
    line = line_of(root, "book/answers.yml", "id: tf-01")
    assert static_problems(root) == [
        f"book/answers.yml:{line}: answer tf-01 needs `reason:`, the verdict's reason in one "
        "line (the true/false chapter's summary table shows it)"]


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


def test_part_with_the_title_of_its_chapter_is_reported(tmp_path):
    root = write_book(tmp_path, {"_quarto.yml": [('part: "Labs"', 'part: "Lab 1"')]})
    assert {c.file: c.title for c in book.read_book(root).chapters} == {
        "index.qmd": "Preface", "book/lab1.qmd": "Lab 1"}  # heading, front matter
    line = line_of(root, "_quarto.yml", 'part: "Lab 1"')
    assert static_problems(root) == [
        f'_quarto.yml:{line}: part "Lab 1" has the title of its chapter book/lab1.qmd, so the '
        "book shows it twice: rename the part (or retitle the chapter)"]


def test_citations_are_told_from_cross_references(tmp_path):
    root = write_book(tmp_path)
    index = book.read_book(root).chapters[0]
    assert [(c.key, c.line) for c in index.citations] == [("lecun1998gradient", 4),
                                                          ("he2016deep", 4)]
    assert "lecun1998gradient" not in {r.key for r in book.references(root)}


def test_citation_missing_from_the_bibliography_is_reported(tmp_path):
    root = write_book(tmp_path, {"index.qmd": [("@he2016deep", "@he2016dep")]})
    line = line_of(root, "index.qmd", "@he2016dep")
    assert static_problems(root) == [
        f"index.qmd:{line}: citation @he2016dep is not in references.bib: add a `he2016dep` "
        "entry; did you mean he2016deep?"]


def test_citation_without_a_bibliography_is_reported(tmp_path):
    root = write_book(tmp_path / "none", {"_quarto.yml": [("bibliography: references.bib\n", "")]})
    line = line_of(root, "index.qmd", "@lecun1998gradient")
    problems = static_problems(root)
    assert len(problems) == 2 and problems[0] == (
        f"index.qmd:{line}: @lecun1998gradient is a citation (no fig-/tbl-/sec-/eq- prefix) but "
        "the book has no bibliography: add `bibliography: references.bib` to _quarto.yml with "
        "an entry lecun1998gradient, or fix the cross-reference")
    root = write_book(tmp_path / "missing")
    (root / "references.bib").unlink()
    line = line_of(root, "_quarto.yml", "bibliography:")
    assert static_problems(root)[0] == (f"_quarto.yml:{line}: bibliography references.bib "
                                        "does not exist")


def test_default_figure_width_wider_than_the_column_is_reported(tmp_path):
    root = write_book(tmp_path, {"_quarto.yml": [("format: html", "fig-width: 8\nformat: html")]})
    line = line_of(root, "_quarto.yml", "fig-width")
    assert static_problems(root) == [
        f"_quarto.yml:{line}: fig-width 8 is wider than the {book.COLUMN_INCHES} in text column "
        "(plots.COLUMN_INCHES)"]


# --- What executed cells show, judged without a kernel: outputs planted by hand.

def executed(text, outputs):
    """A chapter from `text` and its notebook with `outputs` (one list per cell, the
    setup cell first) planted as if the kernel had run it."""
    chapter = book.parse_chapter(textwrap.dedent(text).lstrip("\n"), "book/x.qmd")
    nb, origins = book.chapter_notebook(chapter)
    assert len(outputs) == len(nb.cells)
    for cell, cell_outputs in zip(nb.cells, outputs, strict=True):
        cell.outputs = [nbformat.from_dict(o) for o in cell_outputs]
    return [str(p) for p in book.outcome_problems(chapter, nb, origins, len(nb.cells) - 1)]


def result(data):
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": data}


def test_empty_inline_value_is_reported():
    problems = executed("""
        Runs `{python} subset_note`, `{python} None`, `{python} "x"`, `{python} md`.
        """, [[], [result({"text/plain": "''"})], [], [result({"text/plain": "'x'"})],
              [result({"text/plain": "<IPython.core.display.Markdown object>",
                       "text/markdown": " "})]])
    assert problems == [
        "book/x.qmd:1: inline `{python} subset_note` is empty (''), so Quarto prints its "
        "source in the page; build optional phrases in a cell so that the inline value is "
        "always text",
        "book/x.qmd:1: inline `{python} None` has no value (None), so Quarto prints its source "
        "in the page; make the expression return text",
        "book/x.qmd:1: inline `{python} md` is empty markdown, so Quarto prints its source in "
        "the page; build optional phrases in a cell so that the inline value is always text"]


def test_inline_string_with_markdown_is_reported_unless_returned_as_markdown():
    problems = executed("""
        `{python} memory_text`

        `{python} bold` `{python} link` `{python} Markdown(memory_text)` `{python} star`
        """, [[], [result({"text/plain": "'peak (`torch.cuda.max_memory_allocated`).'"})],
              [result({"text/plain": "'**True**'"})],
              [result({"text/plain": "'see [lab 1](lab1.qmd)'"})],
              [result({"text/plain": "<IPython.core.display.Markdown object>",
                       "text/markdown": "peak (`torch.cuda.max_memory_allocated`)."})],
              [result({"text/plain": "'2 * 3 = 6'"})]])
    assert problems == [
        "book/x.qmd:1: inline `{python} memory_text` carries markdown ('`' in "
        "'peak (`torch.cuda.max_memory_allocated`).'), which Quarto shows as plain text: "
        "return IPython.display.Markdown(...) or drop the markup",
        "book/x.qmd:3: inline `{python} bold` carries markdown ('**' in '**True**'), which "
        "Quarto shows as plain text: return IPython.display.Markdown(...) or drop the markup",
        "book/x.qmd:3: inline `{python} link` carries markdown ('[lab 1](lab1.qmd)' in "
        "'see [lab 1](lab1.qmd)'), which Quarto shows as plain text: return "
        "IPython.display.Markdown(...) or drop the markup"]


def test_table_with_the_default_integer_index_is_reported():
    import pandas as pd

    from analysis import plots

    frame = pd.DataFrame({"lr": [0.1, 1.0], "best_val_acc": [62.3, 61.0]})
    cell = """
        ```{{python}}
        #| label: {label}
        #| tbl-cap: "Runs."
        runs
        ```
        """

    def shown(data):
        return executed(cell.format(label="tbl-runs"), [[], [result(data)]])

    assert shown({"text/html": frame._repr_html_(), "text/plain": repr(frame)}) == [
        "book/x.qmd:2: tbl-runs shows a DataFrame with its default integer index, which the "
        "table prints as a first column: show it with plots.table(df) (a Markdown table "
        "without the index)"]
    filtered = frame[frame["lr"] > 0.5]  # what is left of the index is no better
    assert shown({"text/html": filtered._repr_html_()}) != []
    named = frame.set_index("lr")  # a meaningful index is a column of the table
    assert shown({"text/html": named._repr_html_()}) == []
    table = plots.table(frame)
    assert shown({"text/markdown": table.data, "text/plain": repr(table)}) == []


def png(figsize, dpi=book.FIGURE_DPI):
    """A figure as the inline backend shows it: PNG, cropped to what is drawn."""
    import base64
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    ax.plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def test_figure_wider_than_the_column_is_reported():
    import base64

    wide, fits, sharp = png((9, 2)), png((5, 2)), png((5, 2), dpi=300)
    width, _, dpi = book.png_size(wide)
    assert round(dpi) == book.FIGURE_DPI and width / dpi > book.COLUMN_INCHES + 1
    assert book.png_size(base64.b64decode(sharp))[2] == pytest.approx(300, abs=0.1)
    image = {"output_type": "display_data", "metadata": {}}
    problems = executed("""
        ```{python}
        #| label: fig-wide
        #| fig-cap: "Too wide."
        plot()
        ```

        ```{python}
        #| label: fig-fits
        #| fig-cap: "Fits, at any dpi."
        plot()
        ```
        """, [[], [{**image, "data": {"image/png": wide}}],
              [{**image, "data": {"image/png": fits}}, {**image, "data": {"image/png": sharp}}]])
    assert problems == [
        f"book/x.qmd:2: fig-wide is {width / dpi:.1f} in wide ({width} px at 96 dpi), wider "
        f"than the {book.COLUMN_INCHES} in text column: narrow it (figsize, or seaborn height "
        "× aspect × columns; legend inside or below the axes)"]


def test_tables_for_the_book_are_markdown_without_index():
    import pandas as pd

    from analysis import plots

    runs = pd.DataFrame({"lr": [0.001, 0.01, 1.0], "best_val_acc": [62.3, 61.0, float("nan")],
                         "status": ["finished", "a|b", None], "seed": [0, 1, 2]})
    assert plots.table(runs).data.splitlines() == [
        "| learning rate | best val acc | status   | seed |",
        "|--------------:|-------------:|----------|-----:|",
        "| 0.001         | 62.3         | finished | 0    |",
        "| 0.010         | 61.0         | a\\|b     | 1    |",
        "| 1.000         | –            | –        | 2    |"]
    counts = pd.DataFrame({"train": [5000]}, index=["cat"]).rename_axis("class")
    assert plots.table(counts).data.splitlines()[2] == "| cat   | 5000  |"
    shape = pd.DataFrame({"layer": ["16->16 s1 @32x32"], "decay": [5e-4]})
    assert plots.table(shape).data.splitlines()[2] == "| 16-\\>16 s1 \\@32x32 | 0.0005 |"


def test_curves_fit_the_column():
    import io

    import matplotlib.pyplot as plt
    import pandas as pd

    from analysis import plots

    long = pd.DataFrame([{"epoch": e, "split": s, "metric": m, "value": 0.5, "init": i}
                         for e in (1, 2) for s in ("train", "val") for m in ("loss", "acc")
                         for i in ("default", "kaiming_normal", "xavier_normal")])
    fig = plots.curves(long, hue="init")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=book.FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    width, _, dpi = book.png_size(buffer.getvalue())
    assert width / dpi <= book.COLUMN_INCHES


# --- Execution: each chapter's cells and inline values in a fresh kernel.

@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = write_book(tmp_path_factory.mktemp("clean"))
    return book.check(root, results_dir=results_dir(root), profile="smoke", timeout=120)


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """One book with four broken chapters, run once for the tests below."""
    root = tmp_path_factory.mktemp("broken")
    write_book(root, {
        "book/lab1.qmd": [('ax.set_xlabel("epoch")', "plt.close(fig)"),
                          ('for key in ("val_loss", "val_acc"):', 'for key in ["val_loss"]:')],
        "_quarto.yml": [("- book/lab1.qmd", "- book/lab1.qmd\n        - book/raise.qmd"
                                            "\n        - book/inline.qmd"
                                            "\n        - book/output.qmd")]})
    for name, text in (("raise", RAISING_CHAPTER), ("inline", INLINE_CHAPTER),
                       ("output", OUTPUT_CHAPTER)):
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


def test_output_defects_are_reported_from_the_kernel(broken_run):
    root, problems = broken_run
    inline = line_of(root, "book/output.qmd", "Planted:")
    wide = line_of(root, "book/output.qmd", "#| label: fig-output-wide")
    index = line_of(root, "book/output.qmd", "#| label: tbl-output-index")
    found = [p.split(" (")[0] for p in problems if p.startswith("book/output.qmd")]
    # The kernel draws PNGs at Quarto's dpi, cropped to what is drawn: 9 in less margins.
    inches = float(found[2].split(" is ")[1].removesuffix(" in wide"))
    assert book.COLUMN_INCHES + 1 < inches <= 9
    assert found == [
        f"book/output.qmd:{inline}: inline `{{python}} note` is empty",
        f"book/output.qmd:{inline}: inline `{{python}} \"**bold**\"` carries markdown",
        f"book/output.qmd:{wide}: fig-output-wide is {inches} in wide",
        f"book/output.qmd:{index}: tbl-output-index shows a DataFrame with its default integer "
        "index, which the table prints as a first column: show it with plots.table(df)"]


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
    assert marked["collapsed"] == [[1.0, 10.0]]  # at its accuracy, in percent
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
    assert table.to_dict("records") == [{"learning rate": 0.1, "best val acc": 62.3,
                                         "gap (points)": 1.2, "seed": 0}]


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
