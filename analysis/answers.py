"""The answers as the book shows them: the records of `book/answers.yml`, each question's
finding checked against its record, the callout that opens every question's section, and
the two summary tables (the preface's answers at a glance, the true/false chapter's
summary).

The records' text is static, so it says only what holds on every profile; what the runs
found comes from the question's finding (`analysis.findings`), shown beside that text.
"""
import hashlib
from pathlib import Path

import pandas as pd
import yaml

from analysis import course, findings, paths, results
from analysis.course import QUESTION_IDS
from analysis.paths import ANSWERS_FILE

NO_RESULTS = "no results yet"
UNDECIDED = "undecided"


def records(path=None) -> dict[str, dict]:
    """The records of book/answers.yml (or `path`), by question id."""
    path = Path(path) if path is not None else paths.PROJECT_ROOT / ANSWERS_FILE
    return {r["id"]: r for r in yaml.safe_load(path.read_text(encoding="utf-8")) or []}


def rule_hash(rule: str) -> str:
    """The first 8 hex digits of the SHA-256 of a rule's text, white space folded: what a
    record's `history:` entry names, so that a rule cannot change without a new entry."""
    return hashlib.sha256(" ".join(rule.split()).encode()).hexdigest()[:8]


def rule_history(path=None) -> pd.DataFrame:
    """Every change of a true/false rule, oldest first: statement, date, and why."""
    rows = [{"statement": qid, "date": str(entry["date"]), "why": " ".join(entry["why"].split())}
            for qid, record in records(path).items() for entry in record.get("history", [])]
    return pd.DataFrame(rows, columns=["statement", "date", "why"]).sort_values(
        ["date", "statement"], kind="stable", ignore_index=True)


class Disagreement(AssertionError):
    """A true/false rule gave another verdict than book/answers.yml records."""


def agrees(qid: str, verdict: bool | None, path=None, profile: str | None = None) -> None:
    """Stop the book when the evidence's verdict and the recorded one differ. None (the runs
    decide nothing) is accepted on the smoke profile only, whose runs last minutes."""
    recorded = records(path)[qid]["verdict"]
    profile = profile or results.current_profile()
    if verdict is None:
        if profile != "smoke":
            raise Disagreement(f"{qid}: the evidence of the {profile} profile decides "
                               "nothing; look at its runs")
    elif recorded is not verdict:
        raise Disagreement(f"{qid}: the evidence says {verdict}, {ANSWERS_FILE} says "
                           f"{recorded}; update one of them (and say why in the book)")


def finding(qid: str, results_dir=None, path=None) -> findings.Finding:
    """Question `qid`'s finding; a true/false one checked against its record (`agrees`)."""
    found = findings.find(qid, results_dir)
    if qid.startswith("tf-"):
        agrees(qid, found.verdict, path)
    return found


def short(qid: str, record: dict, found: findings.Finding | None = None) -> str:
    """The short answer: the verdict for tf-*, else the finding's, else the record's."""
    if qid.startswith("tf-"):
        return "True" if record["verdict"] else "False"
    text = (found.short if found else None) or record.get("short")
    if not text:
        raise KeyError(f"{ANSWERS_FILE}: answer {qid} has no `short:` and its finding "
                       "gives no short answer")
    return " ".join(text.split())


# What a `history:` entry's `after_results:` says was changed after seeing a build's results.
AFTER_RESULTS = {
    "rule": "The rule, changed after seeing results (the provenance appendix says why)",
    "measurement": "The rule, fixed before the runs; its measurement corrected after seeing "
                   "results (the provenance appendix says how)",
}


def rule_label(record: dict) -> str:
    """How the callout introduces a rule: fixed before the runs, unless its history says
    that it, or what it measures, changed after results were seen (a rule change first)."""
    changed = {entry.get("after_results") for entry in record.get("history", [])}
    unknown = changed - set(AFTER_RESULTS) - {None}
    if unknown:
        raise ValueError(f"{record['id']}: after_results must be one of {sorted(AFTER_RESULTS)}, "
                         f"not {sorted(unknown)}")
    for what in AFTER_RESULTS:
        if what in changed:
            return AFTER_RESULTS[what]
    return "The rule, fixed before the runs"


def callout(qid: str, found: findings.Finding, path=None) -> str:
    """A Quarto callout with the answer: short answer, the record's answer, key numbers."""
    record = records(path)[qid]
    body = " ".join(record["answer"].split())
    rule = (f"\n\n**{rule_label(record)}:** {' '.join(record['rule'].split())}"
            if record.get("rule") else "")
    return (f'::: {{.callout-note title="Answer"}}\n**{short(qid, record, found)}.** {body} '
            f"**In numbers:** {found.key}.{rule}\n:::\n")


def opening(qid: str, found: findings.Finding, path=None) -> str:
    """What opens a question's section, for a cell with `#| output: asis`: the question,
    quoted, and the answer callout."""
    return f"\n> *{course.question(qid)}*\n\n" + callout(qid, found, path)


def glance(path=None, results_dir=None, find=findings.find) -> pd.DataFrame:
    """One row per question of the course: id, its title, the short answer (a statement's
    verdict), its headline number and a cross-reference to its section (markdown: show it
    with `plots.table(..., markdown=["section"])`)."""
    found = records(path)
    rows = []
    for qid in QUESTION_IDS:
        record = found[qid]
        try:
            f = find(qid, results_dir)
            answer, number = short(qid, record, f), f.headline
        except results.ResultsMissing:
            answer = short(qid, record) if qid.startswith("tf-") or record.get("short") \
                else NO_RESULTS
            number = NO_RESULTS
        rows.append({"id": qid, "question": course.title(qid), "answer": answer,
                     "in numbers": number, "section": f"@sec-{qid}"})
    return pd.DataFrame(rows)


def claims(path=None) -> pd.DataFrame:
    """One row per true/false statement: a cross-reference to its section, its title, our
    verdict and the one-line reason of its record, and the typical submission's verdict
    (marked where it differs from ours). Markdown in `section`."""
    found = records(path)
    typical = course.typical_verdicts()
    rows = []
    for qid in (q for q in QUESTION_IDS if q.startswith("tf-")):
        ours = short(qid, found[qid])
        theirs = "True" if typical[qid] else "False"
        rows.append({"section": f"@sec-{qid}", "statement": course.title(qid),
                     "verdict": ours, "why": " ".join(found[qid]["reason"].split()),
                     "typical submission": theirs + (" (differs)" if theirs != ours else "")})
    return pd.DataFrame(rows)
