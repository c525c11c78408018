"""The answers as the book shows them (analysis/answers.py): the preface's table of every
question, the callout that opens each question's section, and the key numbers, which
need results like the chapters do."""
import textwrap

import pytest

from analysis import answers, book, paths, plots, results
from analysis.answers import Key

TINY_ANSWERS = """
    - id: lab1-a
      question: How do you   sanity-check the model?
      short: Initial loss near ln 10
      answer: >-
        Check the initial loss
        over several seeds.
      experiments: [lenet-init]
      evidence: []
    - id: lab2-b-swish
      question: Does Swish do better?
      answer: Swish is smooth.
      experiments: [lenet-swish]
      evidence: []
    - id: tf-08
      question: About 9x speedup.
      verdict: false
      reason: Under 9 MACs, less time
      answer: The MAC ratio is below 9.
      experiments: [depthwise-latency]
      evidence: []
    """


def missing(results_dir=None):
    raise results.ResultsMissing("no runs")


TINY_KEYS = {"lab1-a": lambda r: Key("initial loss 2.304"),
             "lab2-b-swish": lambda r: Key("Swish - ReLU 0.1 points", "Not measurably"),
             "tf-08": missing}


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "answers.yml"
    path.write_text(textwrap.dedent(TINY_ANSWERS))
    return path


def test_glance_lists_every_question_answered_or_not(tiny):
    table = answers.glance(tiny, keys=TINY_KEYS).set_index("id")
    assert list(table.index) == list(book.QUESTION_IDS)
    assert table.loc["lab1-a"].to_dict() == {
        "question": "How do you sanity-check the model?", "answer": "Initial loss near ln 10",
        "key number": "initial loss 2.304", "section": "@sec-lab1-a"}
    # A short answer that depends on the results comes from the key; a verdict from the
    # record, even when the runs are missing.
    assert table.loc["lab2-b-swish", "answer"] == "Not measurably"
    assert table.loc["tf-08", ["answer", "key number", "section"]].tolist() == [
        "False", answers.NO_RESULTS, "@sec-tf-08"]
    pending = table.drop(index=["lab1-a", "lab2-b-swish", "tf-08"])
    assert set(pending["answer"]) == {answers.NOT_ANSWERED}
    assert set(pending["section"]) == {"–"} and set(pending["key number"]) == {"–"}
    assert set(pending["question"]) == {"–"}  # every question has a record in the book now


def test_glance_table_links_sections_and_escapes_the_rest(tiny):
    text = plots.table(answers.glance(tiny, keys=TINY_KEYS), markdown=["section"]).data
    lines = text.splitlines()
    assert len(lines) == 2 + len(book.QUESTION_IDS)
    row = next(line for line in lines if line.startswith("| lab1-a"))
    assert "| @sec-lab1-a" in row  # a cross-reference Quarto turns into a link
    assert "\\@sec" not in text and "@sec-tf-01" not in text  # no section, no link
    # The other columns stay plain text: `*` would be emphasis there.
    frame = answers.glance(tiny, keys=TINY_KEYS).assign(question="2*3 @32x32")
    assert "2\\*3 \\@32x32" in plots.table(frame, markdown=["section"]).data


def test_claims_sets_our_verdicts_against_the_typical_submission(tiny):
    table = answers.claims(tiny).set_index("section")
    assert len(table) == 10  # every statement, answered or not
    # tf-08: ours False, the typical submission's True: marked.
    assert table.loc["@sec-tf-08"].to_dict() == {
        "statement": "About 9x speedup.", "verdict": "False", "why": "Under 9 MACs, less time",
        "typical submission": "True (differs)"}
    pending = table.loc["–"]
    assert set(pending["verdict"]) == {answers.NOT_ANSWERED} and len(pending) == 9
    assert pending["typical submission"].str.endswith(("True", "False")).all()


def test_every_question_has_its_text_and_every_answer_a_key_function():
    records = answers.records()
    for qid in book.QUESTION_IDS:
        assert answers.question(qid, records.get(qid))
    assert set(records) <= set(answers.KEYS)
    # An answered question's text lives in its record only.
    assert not set(records) & set(answers.PENDING_QUESTIONS)
    for qid, record in records.items():
        assert record.get("question"), f"{qid} has no question: in book/answers.yml"


def test_callout_renders_the_answer_as_a_quarto_callout(tiny):
    assert answers.callout("lab1-a", Key("initial loss 2.304"), path=tiny) == (
        '::: {.callout-note title="Answer"}\n'
        "**Initial loss near ln 10.** Check the initial loss over several seeds. "
        "**In numbers:** initial loss 2.304.\n"
        ":::\n")
    # A true/false statement leads with its verdict.
    assert answers.callout("tf-08", Key("MAC ratio 6.73×"), path=tiny).splitlines()[1] == (
        "**False.** The MAC ratio is below 9. **In numbers:** MAC ratio 6.73×.")


def test_opening_quotes_the_question_before_the_callout(tiny):
    text = answers.opening("lab2-b-swish", Key("Swish - ReLU 0.1 points", "Not measurably"),
                           path=tiny)
    assert text.startswith("\n> *Does Swish do better?*\n\n::: {.callout-note")
    assert "**Not measurably.** Swish is smooth." in text


def test_key_numbers_need_results_like_the_chapters(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.PROFILE_ENV, "smoke")
    needing = [qid for qid, r in answers.records().items() if r["experiments"]]
    assert "lab2-a" in needing and "tf-08" in needing
    for qid in needing:
        with pytest.raises(results.ResultsMissing):
            answers.KEYS[qid](tmp_path)  # an empty results folder

