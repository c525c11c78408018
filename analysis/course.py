"""The course assignment the book answers (`book/course.yml`): its questions, in order,
and the figures the book compares with (a typical submission's, published ones).

One place for course data: chapters, answers and the checker read it from here.
"""
import functools

import yaml

from analysis import paths


@functools.cache
def _course() -> dict:
    return yaml.safe_load((paths.PROJECT_ROOT / paths.COURSE_FILE).read_text(encoding="utf-8"))


def questions() -> dict[str, dict]:
    """Every question of the course, in the order it asks them, by id: {id, part, title,
    question, asks}."""
    return {q["id"]: {**q, "part": part["part"]}
            for part in _course()["parts"] for q in part["questions"]}


QUESTION_IDS: tuple[str, ...] = tuple(questions())


def question(qid: str) -> str:
    """The question in one sentence (white space folded)."""
    return " ".join(questions()[qid]["question"].split())


def title(qid: str) -> str:
    """A few words naming the question, for tables."""
    return questions()[qid]["title"]


def typical_accuracy() -> dict[str, float]:
    """A typical submission's single-run accuracies (fractions): baseline, crop_flip,
    batch_norm, swish, resnet."""
    return dict(_course()["typical"]["accuracy"])


def typical_resnet_epochs() -> int:
    """How long the typical submission trained its ResNet."""
    return int(_course()["typical"]["resnet_epochs"])


def typical_verdicts() -> dict[str, bool]:
    """A typical submission's true/false verdicts, by statement id."""
    return dict(_course()["typical"]["verdicts"])


def published() -> dict[str, float]:
    """Published figures the book compares with: resnet20_error and resnet20_epochs (He et
    al. 2016)."""
    return dict(_course()["published"])
