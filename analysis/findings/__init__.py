"""Findings: what each question's section says, computed once from the results.

Every question of the course has one function, `find(qid)` reaches it: Part 1's
statements in `claims` (and the two cost analyses, tf-08 and tf-09, in `costs`), the
labs in `labs`. Each takes the results folder and returns a frozen dataclass holding the
numbers its section quotes and, where the answer depends on the data, what its rule
gives. The answer callout, the preface's table, the chapter's prose and the check
against `book/answers.yml` all read that one object: no chapter computes a number that a
callout shows, and no rule lives in a chapter.

A rule is a plain function of made-up-able data (DataFrames, Differences), so that tests
can give it every outcome; the function that loads the results only gathers its input.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

ACC = "final_val_acc"  # the accuracy settings are compared by (results.final_accuracy)
# Two settings count as equivalent when the whole interval of their difference lies within
# this of zero (one point of accuracy): "within noise" alone says only "inconclusive".
MARGIN = 0.01
# Runs trained for fewer epochs than this (the smoke profile's one or two) decide no
# true/false statement: their verdict is None, which only the smoke profile may leave so.
MIN_EPOCHS_TO_JUDGE = 5


@dataclass(frozen=True)
class Finding:
    """What the book shows of every question:

    - `key`: the callout's "In numbers" line: the numbers that carry the answer;
    - `headline`: one number for the preface's table (default: `key`);
    - `short`: the short answer where it depends on the results (None: the answer record's
      static `short:`; a true/false statement's short answer is its verdict).

    A true/false finding also has a field `verdict` (True, False, or None: undecided).
    """

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def headline(self) -> str:
        return self.key

    @property
    def short(self) -> str | None:
        return None


@functools.cache
def registry() -> dict[str, Callable[..., Finding]]:
    """Question id -> its findings function `(results_dir=None) -> Finding`."""
    from analysis.findings import claims, costs, labs

    return {**labs.FINDINGS, **claims.FINDINGS, **costs.FINDINGS}


def find(qid: str, results_dir=None) -> Finding:
    """The finding of question `qid` (`results.ResultsMissing` when its runs are missing)."""
    return registry()[qid](results_dir)


def names(values, fmt=str) -> str:
    """'a', 'a and b', 'a, b and c'."""
    values = [fmt(v) for v in values]
    if not values:
        return "none"
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]
