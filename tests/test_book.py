"""`dlbook check` on small books built in tmp_path: a clean one passes, each
planted mistake is reported at its file and line. Static checks run without
a kernel; the execution checks share two module-level runs (one kernel per
chapter) to stay fast."""
import argparse
import json
import textwrap
from pathlib import Path

import nbformat
import pytest
import rendering

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
        side [@fig-lab1-g-pair; @eq-gap].

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
        #| layout-ncol: 2
        for key in ("val_loss", "val_acc"):
            fig, ax = plt.subplots(figsize=(3, 2))
            ax.plot(history[key])
        ```

        ```{python}
        #| label: tbl-lab1-g-summary
        #| tbl-cap: "Best epoch."
        best = pd.DataFrame({"epoch": [history["val_acc"].index(max(history["val_acc"]))],
                             "val_acc": [max(history["val_acc"])]})
        plots.table(plots.percent(best))
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

    Planted: `{python} note`, `{python} "**bold**"`, `{python} "see @sec-output"`; fine:
    `{python} Markdown("**bold**")`, `{python} "a@b.org"`.

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
    #| tbl-cap: "Shows no index, and what the code calls things."
    plots.table(pd.DataFrame({"setting": ["warmup_epochs"], "best val acc": [0.1008]}))
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
    """The results the mini book reads, and the smoke profile's (empty) index of runs."""
    results = root / "results"
    (results / "index").mkdir(parents=True, exist_ok=True)
    (results / "index" / "smoke.json").write_text("[]")
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
    read = book.read_book(root)
    assert {label.name for label in book.book_labels(read)} == {
        "sec-lab1-g", "sec-tf-01", "fig-lab1-g-curves", "fig-lab1-g-pair",
        "tbl-lab1-g-summary", "eq-gap"}
    refs = [(r.key, r.label) for chapter in read.chapters for r in chapter.references]
    # Not references: the email, code, the comment, the display-only block.
    assert refs == [
        ("sec-lab1-g", "sec-lab1-g"), ("sec-tf-01", "sec-tf-01"),
        ("fig-lab1-g-curves", "fig-lab1-g-curves"), ("tbl-lab1-g-summary", "tbl-lab1-g-summary"),
        ("Fig-lab1-g-pair", "fig-lab1-g-pair"), ("fig-lab1-g-pair", "fig-lab1-g-pair"),
        ("eq-gap", "eq-gap"), ("tbl-lab1-g-summary", "tbl-lab1-g-summary"),  # in the fig-cap
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


def test_heading_with_a_figure_label_is_reported(tmp_path):
    root = write_book(tmp_path, {"book/lab1.qmd": [
        ("{#sec-tf-01}", "{#sec-tf-01}\n\n### Curves {#fig-lab1-heading}")]})
    line = line_of(root, "book/lab1.qmd", "{#fig-lab1-heading}")
    assert static_problems(root) == [f"book/lab1.qmd:{line}: heading id fig-lab1-heading: a "
                                     "section's label must start with sec-"]


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


def test_reference_to_a_figure_of_the_unnumbered_home_page_is_reported(tmp_path):
    root = write_book(tmp_path, {
        "index.qmd": [("<!--", "::: {#fig-cover}\n![](cover.png)\n\nThe cover.\n:::\n\n<!--")],
        "book/lab1.qmd": [("## Batch norm", "See @fig-cover.\n\n## Batch norm")]})
    line = line_of(root, "book/lab1.qmd", "@fig-cover")
    assert static_problems(root) == [
        f"book/lab1.qmd:{line}: @fig-cover points into index.qmd, which is unnumbered: Quarto "
        "cannot number it; move it to a chapter"]


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


def test_cli_prints_summary_or_problems(tmp_path, monkeypatch, capsys):
    args = argparse.Namespace(no_execute=True, results=None, profile=None, data_dir=None)
    monkeypatch.chdir(write_book(tmp_path / "ok"))
    assert book.cli(args) == 0
    assert "book OK: 2 chapters, 6 labels, 8 references, 2 answers" in capsys.readouterr().out
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
    assert "lecun1998gradient" not in {r.key for r in index.references}


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
        "book/x.qmd:1: inline `{python} md` is empty (markdown), so Quarto prints its source "
        "in the page; build optional phrases in a cell so that the inline value is always text"]


def inline_values(values):
    """The problems of one inline value per line, `{python} name`, that returned
    values[name]: a string (shown as its repr, as the kernel does) or the output's data."""
    text = "\n".join(f"`{{python}} {name}`" for name in values)
    return executed(text, [[]] + [[result({"text/plain": repr(v)} if isinstance(v, str) else v)]
                                  for v in values.values()])


def test_inline_text_with_a_reference_citation_or_markdown_is_reported():
    problems = inline_values({
        "ref": "see @sec-lab2-b-bn", "cite": "as @he2016deep found",
        "code": "peak (`torch.cuda.max_memory_allocated`).", "link": "see [lab 1](lab1.qmd)",
        "strong": "**True**", "em": "the *more* the better", "under": "a _large_ gap"})
    assert problems[0] == (
        "book/x.qmd:1: inline `{python} ref` is text with a reference ('@sec-lab2-b-bn' in "
        "'see @sec-lab2-b-bn'), which Quarto escapes, so readers see it as typed: write the "
        "reference in the chapter text (inline values carry numbers and plain words)")
    assert [p.split(" is text with ")[1].split(", which")[0] for p in problems] == [
        "a reference ('@sec-lab2-b-bn' in 'see @sec-lab2-b-bn')",
        "a citation ('@he2016deep' in 'as @he2016deep found')",
        "markdown ('`torch.cuda.max_memory_allocated`' in "
        "'peak (`torch.cuda.max_memory_allocated`).')",
        "markdown ('[lab 1](lab1.qmd)' in 'see [lab 1](lab1.qmd)')",
        "markdown ('**True**' in '**True**')", "markdown ('*more*' in 'the *more* the better')",
        "markdown ('_large_' in 'a _large_ gap')"]
    assert [int(p.split(":")[1]) for p in problems] == list(range(1, 8))
    assert "write the markup in the chapter text" in problems[-1]


def test_inline_text_of_numbers_and_plain_words_passes():
    markdown = {"text/plain": "<IPython.core.display.Markdown object>",
                "text/markdown": "see @sec-lab2-b-bn, **bold**"}  # inserted as markdown
    assert inline_values({"mail": "write to someone@example.com", "product": "2 * 3 * 4 = 24",
                          "star": "5* and 6*", "snake": "the weight_decay key", "pct": "62.3%",
                          "number": {"text/plain": "0.5"}, "md": markdown}) == []


def table_problems(data):
    """The problems of a tbl- cell that showed one output with `data`."""
    return executed("""
        ```{python}
        #| label: tbl-runs
        #| tbl-cap: "Runs."
        runs
        ```
        """, [[], [result(data)]])


def test_table_with_names_from_the_code_fractions_or_minus_zero_is_reported():
    import pandas as pd

    planted = textwrap.dedent("""\
        | weight_decay | best val acc | activation | batch norm | change      | layer |
        |-------------:|-------------:|------------|------------|-------------|-------|
        | 0.0005       | 0.1008       | relu       | True       | -0.0 points | conv1 |
        | 0            | 0.5          | ReLU       | None       | 1.0 points  | -0    |""")
    defects = [p.removeprefix("book/x.qmd:2: tbl-runs shows ").split(", a negative")[0]
               .split(", plots.COLUMN_NAMES")[0]
               for p in table_problems({"text/markdown": planted})]
    assert defects == ["names from the code ('weight_decay' in column 'weight_decay'): say them "
                       "in words (plots.readable",
                       "accuracy as a fraction (0.1008 in column 'best val acc') where the book "
                       "writes percent: convert it with plots.percent",
                       "names from the code ('relu' in column 'activation'): say them in words "
                       "(plots.readable",
                       "names from the code ('True', 'None' in column 'batch norm'): say them in "
                       "words (plots.readable",
                       "'-0.0 points' (column 'change')", "'-0' (column 'layer')"]
    frame = pd.DataFrame({"lr": [0.1, 1.0], "val acc": [62.3, 61.0]})
    assert table_problems({"text/html": frame._repr_html_()}) == [
        "book/x.qmd:2: tbl-runs shows pandas' default integer index as a first column: show it "
        "with plots.table(df) (a Markdown table without the index)"]
    filtered = frame[frame["lr"] > 0.5]  # what is left of the index is no better
    assert table_problems({"text/html": filtered._repr_html_()}) != []
    named = frame.set_index("lr")  # a meaningful index is a column of the table
    assert table_problems({"text/html": named._repr_html_()}) == []
    coded = named.rename(columns={"val acc": "flip_p"})
    assert table_problems({"text/html": coded._repr_html_()}) == [
        "book/x.qmd:2: tbl-runs shows names from the code ('flip_p' in column 'flip_p'): say "
        "them in words (plots.readable, plots.COLUMN_NAMES or table(names=...))"]


def test_table_in_readers_words_passes():
    import pandas as pd

    from analysis import plots

    runs = pd.DataFrame({"weight_decay": [5e-4, 0.0], "best_val_acc": [0.1008, 0.5],
                         "activation": ["relu", "leaky_relu"], "batch_norm": [True, False],
                         "optimizer": ["sgd", "adam"], "status": ["finished", "none"],
                         "diff": [0.00001, -0.01], "layer": ["conv1", "16->16 @32x32"]})
    table = plots.table(plots.percent(plots.readable(runs)))
    assert table_problems({"text/markdown": table.data}) == []
    shown = plots.percent(plots.readable(runs)).set_index("weight decay")
    assert table_problems({"text/html": shown._repr_html_()}) == []


def test_lines_are_counted_across_a_wrapped_code_span_and_an_open_fence_is_reported():
    chapter = book.parse_chapter("# T\n\nA `{python}\nf(1)` and `x\ny` then\n@fig-a, \\@fig-b."
                                 "\n\n> quoted\n>\n> ```python\n> x\n> ```\n\n```{python}\nx = 1\n",
                                 "c.qmd")
    assert chapter.inline == [book.Inline(3, "f(1)")]
    assert [(r.key, r.line) for r in chapter.references] == [("fig-a", 6)]  # not the escaped
    assert [str(p) for p in chapter.problems] == ["c.qmd:14: code block opened with ``` is "
                                                  "never closed"]  # not the quoted one


def test_missing_results_are_said_once_before_any_kernel_starts(tmp_path, monkeypatch, capsys):
    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel started")

    monkeypatch.setattr(book, "run_chapter", no_kernel)
    root = write_book(tmp_path, {"book/lab1.qmd": [("(@fig-lab1-g-curves,", "(@fig-lab1-curvs,")]})
    problems = [str(p) for p in book.check(root, results_dir=tmp_path / "none", profile="smoke")]
    assert len(problems) == 2 and "@fig-lab1-curvs does not resolve" in problems[0]
    assert problems[1].startswith(f"no results for profile 'smoke' under {tmp_path / 'none'}")
    assert "dlbook run --profile smoke" in problems[1]
    assert problems[1].endswith("no chapter was run, only the static checks")


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
        "book/lab1.qmd": [('ax.set_xlabel("epoch")', "plt.close(fig)")],
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
    assert [p for p in problems if p.startswith("book/lab1.qmd")] == [
        f"book/lab1.qmd:{curves}: fig-lab1-g-curves produced no figure "
        "(no image output; was the figure closed, or never drawn?)"]


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
    code = line_of(root, "book/output.qmd", "#| label: tbl-output-markdown")
    found = [p.split(" (")[0] for p in problems if p.startswith("book/output.qmd")]
    # The kernel draws PNGs at Quarto's dpi, cropped to what is drawn: 9 in less margins.
    inches = float(found[3].split(" is ")[1].removesuffix(" in wide"))
    assert book.COLUMN_INCHES + 1 < inches <= 9
    assert found == [
        f"book/output.qmd:{inline}: inline `{{python}} note` is empty",
        f"book/output.qmd:{inline}: inline `{{python}} \"**bold**\"` is text with markdown",
        f"book/output.qmd:{inline}: inline `{{python}} \"see @sec-output\"` is text with a "
        "reference",
        f"book/output.qmd:{wide}: fig-output-wide is {inches} in wide",
        f"book/output.qmd:{index}: tbl-output-index shows pandas' default integer index as a "
        "first column: show it with plots.table(df)",
        f"book/output.qmd:{code}: tbl-output-markdown shows names from the code",
        f"book/output.qmd:{code}: tbl-output-markdown shows accuracy as a fraction"]


def test_quarto_render(tmp_path):
    root = write_book(tmp_path)
    code, log = rendering.render(root, "smoke", results_dir=results_dir(root), to="html",
                                 timeout=600)
    assert code == 0, log
    assert rendering.unresolved(log) == [], log


def test_kernels_get_absolute_folders_whatever_the_user_typed(tmp_path, monkeypatch):
    from analysis import book

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLBOOK_DATA", "relative/data")
    env = book.kernel_env(results_dir="res", profile="cpu")
    assert env["DLBOOK_DATA"] == str(tmp_path / "relative" / "data")
    assert env["DLBOOK_RESULTS"] == str(tmp_path / "res") and env["DLBOOK_PROFILE"] == "cpu"
    assert book.kernel_env(data_dir="d")["DLBOOK_DATA"] == str(tmp_path / "d")



MAX_CELL_LINES = 25  # a chapter is prose over findings and figures (analysis/), not a program


def test_the_real_chapters_keep_their_code_cells_short():
    real = book.read_book(book.find_root(Path(__file__).resolve().parent))
    assert len(real.chapters) >= 8
    long = [(chapter.file, cell.line, n) for chapter in real.chapters for cell in chapter.cells
            if (n := sum(1 for line in cell.source.splitlines()
                         if not line.lstrip().startswith("#|"))) > MAX_CELL_LINES]
    assert not long, f"code cells over {MAX_CELL_LINES} lines (move the code to analysis/): {long}"
