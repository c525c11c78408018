"""The answers as the book shows them (analysis/answers.py): the preface's table, the
callout that opens each section, the check of a verdict against its record, and the
rules' history."""
import textwrap
from dataclasses import dataclass

import pytest
import yaml

from analysis import answers, course, findings, paths, plots, results
from analysis.findings import Finding

TINY_ANSWERS = """
    - id: lab1-a
      short: Initial loss near ln 10
      answer: >-
        Check the initial loss
        over several seeds.
      experiments: [lenet-init]
      evidence: []
    - id: lab2-b-swish
      answer: Swish is smooth.
      experiments: [lenet-swish]
      evidence: []
    - id: tf-08
      verdict: false
      reason: Under 9 MACs, less time
      rule: True if the best speedup reaches 8x.
      answer: The MAC ratio is below 9.
      experiments: [depthwise-latency]
      evidence: []
    """


@dataclass(frozen=True)
class Made(Finding):
    text: str
    answer: str | None = None
    verdict: bool | None = None

    @property
    def key(self):
        return self.text

    @property
    def short(self):
        return self.answer


def missing(qid, results_dir=None):
    raise results.ResultsMissing("no runs")


def tiny_find(qid, results_dir=None):
    return {"lab1-a": Made("initial loss 2.304"),
            "lab2-b-swish": Made("Swish minus ReLU 0.1 points", "Not measurably")}.get(
        qid) or missing(qid)


@pytest.fixture
def tiny(tmp_path):
    records = yaml.safe_load(textwrap.dedent(TINY_ANSWERS))
    # Every other question gets a plain record, so that the table has all of them.
    records += [{"id": q, "short": "later", "answer": "later", "experiments": [],
                 "evidence": [], **({"verdict": True, "reason": "r"} if q.startswith("tf-")
                                    else {})}
                for q in course.QUESTION_IDS if q not in ("lab1-a", "lab2-b-swish", "tf-08")]
    path = tmp_path / "answers.yml"
    path.write_text(yaml.safe_dump(records, allow_unicode=True))
    return path


def test_glance_lists_every_question_with_one_number(tiny):
    table = answers.glance(tiny, find=tiny_find).set_index("id")
    assert list(table.index) == list(course.QUESTION_IDS)
    assert table.loc["lab1-a"].to_dict() == {
        "question": course.title("lab1-a"), "answer": "Initial loss near ln 10",
        "in numbers": "initial loss 2.304", "section": "@sec-lab1-a"}
    # A short answer that depends on the results comes from the finding; a verdict from
    # the record, even when the runs are missing.
    assert table.loc["lab2-b-swish", "answer"] == "Not measurably"
    assert table.loc["tf-08", ["answer", "in numbers"]].tolist() == ["False", answers.NO_RESULTS]


def test_glance_table_links_sections_and_escapes_the_rest(tiny):
    text = plots.table(answers.glance(tiny, find=tiny_find), markdown=["section"]).data
    lines = text.splitlines()
    assert len(lines) == 2 + len(course.QUESTION_IDS)
    row = next(line for line in lines if line.startswith("| lab1-a"))
    assert "| @sec-lab1-a" in row  # a cross-reference Quarto turns into a link
    frame = answers.glance(tiny, find=tiny_find).assign(question="2*3 @32x32")
    assert "2\\*3 \\@32x32" in plots.table(frame, markdown=["section"]).data


def test_claims_sets_our_verdicts_against_the_typical_submission(tiny):
    table = answers.claims(tiny).set_index("section")
    assert len(table) == 10
    # tf-08: ours False, the typical submission's True: marked.
    assert table.loc["@sec-tf-08"].to_dict() == {
        "statement": course.title("tf-08"), "verdict": "False",
        "why": "Under 9 MACs, less time", "typical submission": "True (differs)"}
    assert table.loc["@sec-tf-09", "typical submission"] == "False (differs)"  # ours True here


def test_callout_quotes_the_answer_the_numbers_and_the_rule(tiny):
    assert answers.callout("lab1-a", Made("initial loss 2.304"), path=tiny) == (
        '::: {.callout-note title="Answer"}\n'
        "**Initial loss near ln 10.** Check the initial loss over several seeds. "
        "**In numbers:** initial loss 2.304.\n"
        ":::\n")
    lines = answers.callout("tf-08", Made("MAC ratio 6.73×"), path=tiny).splitlines()
    assert lines[1] == "**False.** The MAC ratio is below 9. **In numbers:** MAC ratio 6.73×."
    assert lines[3] == "**The rule, fixed before the runs:** True if the best speedup reaches 8x."


def test_the_callout_says_when_a_rule_or_its_measurement_changed_after_results():
    before = {"id": "tf-x", "history": [{"date": "2026-12-02"}]}
    assert answers.rule_label(before) == "The rule, fixed before the runs"
    measured = {"id": "tf-x", "history": [*before["history"], {"after_results": "measurement"}]}
    assert answers.rule_label(measured).startswith(
        "The rule, fixed before the runs; its measurement corrected after seeing results")
    changed = {"id": "tf-x", "history": [*measured["history"], {"after_results": "rule"}]}
    assert answers.rule_label(changed).startswith("The rule, changed after seeing results")
    with pytest.raises(ValueError, match="after_results must be one of"):
        answers.rule_label({"id": "tf-x", "history": [{"after_results": "yes"}]})
    # The book's own records: tf-07's rule changed after the cpu results, tf-01's measurement.
    records = answers.records()
    assert answers.rule_label(records["tf-07"]) == answers.AFTER_RESULTS["rule"]
    assert answers.rule_label(records["tf-01"]) == answers.AFTER_RESULTS["measurement"]


def test_opening_quotes_the_question_before_the_callout(tiny):
    text = answers.opening("lab2-b-swish", Made("x", "Not measurably"), path=tiny)
    assert text.startswith(f"\n> *{course.question('lab2-b-swish')}*\n\n::: {{.callout-note")
    assert "**Not measurably.** Swish is smooth." in text


def test_a_verdict_that_differs_from_its_record_stops_the_book(tiny):
    answers.agrees("tf-08", False, tiny, profile="cpu")
    with pytest.raises(answers.Disagreement, match="evidence says True"):
        answers.agrees("tf-08", True, tiny, profile="cpu")
    answers.agrees("tf-08", None, tiny, profile="smoke")  # short runs may decide nothing
    with pytest.raises(answers.Disagreement, match="decides nothing"):
        answers.agrees("tf-08", None, tiny, profile="cpu")


def test_every_question_has_a_record_text_and_a_finding():
    records = answers.records()
    assert set(records) == set(course.QUESTION_IDS) == set(findings.registry())
    for qid in course.QUESTION_IDS:
        assert course.question(qid) and course.title(qid)
    assert not any("question" in record for record in records.values())


def test_every_rule_is_stated_and_changes_only_with_a_history_entry():
    for qid, record in answers.records().items():
        if not qid.startswith("tf-"):
            continue
        assert record["rule"].strip() and record["history"], qid
        latest = record["history"][-1]
        assert latest["rule"] == answers.rule_hash(record["rule"]), (
            f"{qid}: its rule changed without a history entry; add one (date, why, rule: "
            f"{answers.rule_hash(record['rule'])})")
    table = answers.rule_history()
    assert set(table["statement"]) == {q for q in course.QUESTION_IDS if q.startswith("tf-")}


def test_rule_hash_ignores_line_breaks():
    assert answers.rule_hash("a  b\n c") == answers.rule_hash("a b c") != answers.rule_hash("a c")


def test_findings_need_results_like_the_chapters(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.PROFILE_ENV, "smoke")
    needing = [qid for qid, r in answers.records().items() if r["experiments"]]
    assert "lab2-a" in needing and "tf-08" in needing
    for qid in needing:
        with pytest.raises(results.ResultsMissing):
            findings.find(qid, tmp_path)  # an empty results folder
