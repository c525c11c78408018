"""The answers as the book shows them (analysis/answers.py): the preface's table of every
question, the callout that opens each question's section, and the key numbers, which
need results like the chapters do."""
import textwrap

import pytest

from analysis import answers, course, paths, plots, results
from analysis.answers import Key

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
    assert list(table.index) == list(course.QUESTION_IDS)
    assert table.loc["lab1-a"].to_dict() == {
        "question": course.question("lab1-a"), "answer": "Initial loss near ln 10",
        "key number": "initial loss 2.304", "section": "@sec-lab1-a"}
    # A short answer that depends on the results comes from the key; a verdict from the
    # record, even when the runs are missing.
    assert table.loc["lab2-b-swish", "answer"] == "Not measurably"
    assert table.loc["tf-08", ["answer", "key number", "section"]].tolist() == [
        "False", answers.NO_RESULTS, "@sec-tf-08"]
    pending = table.drop(index=["lab1-a", "lab2-b-swish", "tf-08"])
    assert set(pending["answer"]) == {answers.NOT_ANSWERED}
    assert set(pending["section"]) == {"–"} and set(pending["key number"]) == {"–"}
    assert (pending["question"] != "–").all()  # the course's text, answered or not


def test_glance_table_links_sections_and_escapes_the_rest(tiny):
    text = plots.table(answers.glance(tiny, keys=TINY_KEYS), markdown=["section"]).data
    lines = text.splitlines()
    assert len(lines) == 2 + len(course.QUESTION_IDS)
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
        "statement": course.question("tf-08"), "verdict": "False", "why": "Under 9 MACs, less time",
        "typical submission": "True (differs)"}
    pending = table.loc["–"]
    assert set(pending["verdict"]) == {answers.NOT_ANSWERED} and len(pending) == 9
    assert pending["typical submission"].str.endswith(("True", "False")).all()


def test_every_question_has_its_text_and_every_answer_a_key_function():
    records = answers.records()
    for qid in course.QUESTION_IDS:
        assert course.question(qid) and course.title(qid)
    assert set(records) <= set(answers.KEYS)
    # The question's text lives in the course file only.
    assert not any("question" in record for record in records.values())


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
    assert text.startswith(f"\n> *{course.question('lab2-b-swish')}*\n\n::: {{.callout-note")
    assert "**Not measurably.** Swish is smooth." in text


def test_key_numbers_need_results_like_the_chapters(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.PROFILE_ENV, "smoke")
    needing = [qid for qid, r in answers.records().items() if r["experiments"]]
    assert "lab2-a" in needing and "tf-08" in needing
    for qid in needing:
        with pytest.raises(results.ResultsMissing):
            answers.KEYS[qid](tmp_path)  # an empty results folder



# ---------------------------------------------------------------- Part 1 verdict logic

import pandas as pd  # noqa: E402


def test_loss_spikes_count_steps_far_above_the_recent_median_after_the_first_epoch():
    steps = pd.DataFrame({"epoch": [1] * 60 + [2] * 60, "step": list(range(1, 61)) * 2,
                          "loss": [1.0] * 120, "seed": 0, "lr": 0.1})
    steps.loc[10, "loss"] = 9.0  # first epoch: not counted (warm-up spikes are expected)
    steps.loc[70, "loss"] = 2.5  # above twice the median of the 50 steps before it
    steps.loc[80, "loss"] = 1.9  # below twice: no spike
    steps.loc[90, "loss"] = None  # a non-finite step counts
    got = answers.loss_spikes(steps, ["lr"])
    assert got.to_dict("records") == [{"lr": 0.1, "seed": 0, "spikes": 2}]


def _grid(acc: dict, epochs=12):
    rows = [{"weight_decay": wd, "dropout": p, "seed": s, "best_val_acc": a, "epochs": epochs}
            for (wd, p), values in acc.items() for s, a in enumerate(values)]
    return answers.tf05_cells(pd.DataFrame(rows))


def test_tf05_counts_lost_seeds_and_guarantees_nothing_after_one_loss():
    both_wins = {(0.0, 0.0): [0.50, 0.51, 0.52], (1e-3, 0.0): [0.52, 0.53, 0.54],
                 (0.0, 0.5): [0.53, 0.54, 0.55], (1e-3, 0.5): [0.60, 0.62, 0.63]}
    assert answers.tf05_losses(_grid(both_wins)) == (0, 3)
    assert answers.tf05_verdict(_grid(both_wins)) is True
    one_loss = {**both_wins, (1e-3, 0.5): [0.60, 0.62, 0.54]}  # seed 2: below dropout only
    assert answers.tf05_losses(_grid(one_loss)) == (1, 3)
    assert answers.tf05_verdict(_grid(one_loss)) is False
    assert answers.tf05_verdict(_grid(both_wins, epochs=1)) is None  # smoke: not judged


def _leaky(relu_final, leaky_diverged, spikes=(0, 0), acc_gain=0.05):
    """tf06_evidence-shaped input: two rates, three seeds each."""
    runs, metrics, steps = [], [], []
    for lr in (0.01, 0.5):
        for act in ("relu", "leaky_relu"):
            for seed in range(3):
                diverged = act == "leaky_relu" and lr == 0.5 and leaky_diverged
                acc = 0.5 + 0.01 * seed + (acc_gain if act == "leaky_relu" else 0.0)
                runs.append({"lr": lr, "activation": act, "seed": seed, "epochs": 12,
                             "status": "diverged" if diverged else "finished",
                             "best_val_acc": None if diverged else acc})
                if diverged:
                    continue
                final = relu_final if (act == "relu" and lr == 0.5) else acc
                metrics.append({"lr": lr, "activation": act, "seed": seed, "epoch": 12,
                                "val_acc": final, "dead_conv1": 0.0, "dead_conv2": 0.0,
                                "dead_fc3": 0.0, "dead_fc4": 0.0})
                loss = [1.0] * 120
                for k in range(spikes[act == "leaky_relu"]):
                    loss[70 + 10 * k] = 5.0 + seed
                steps += [{"lr": lr, "activation": act, "seed": seed, "epoch": 1 + i // 60,
                           "step": 1 + i % 60, "loss": v} for i, v in enumerate(loss)]
    return answers.tf06_evidence(pd.DataFrame(runs), pd.DataFrame(metrics), pd.DataFrame(steps))


def test_tf06_a_dead_relu_network_does_not_make_leaky_relu_less_stable():
    # Leaky ReLU better (fixes), diverging where ReLU's network died: not less stable.
    assert answers.tf06_verdict(_leaky(relu_final=0.10, leaky_diverged=True)) is False
    # Diverging where ReLU still learns is instability: the claim then holds.
    assert answers.tf06_verdict(_leaky(relu_final=0.45, leaky_diverged=True)) is True
    # So are more loss spikes, beyond noise.
    assert answers.tf06_verdict(_leaky(0.45, False, spikes=(0, 2))) is True
    assert answers.tf06_verdict(_leaky(0.45, False)) is False


def test_tf03_one_harmful_augmentation_refutes_the_claim():
    vs = pd.DataFrame({"augmentation": ["vflip", "rot180"],
                       "verdict": ["lower", "within noise"]})
    assert answers.tf03_verdict(vs, epochs=20) is False
    assert answers.tf03_verdict(vs.assign(verdict="within noise"), epochs=20) is None
    assert answers.tf03_verdict(vs.assign(verdict="higher"), epochs=20) is True
    assert answers.tf03_verdict(vs, epochs=2) is None

