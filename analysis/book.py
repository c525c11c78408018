"""`dlbook check`: verify the Quarto book without Quarto (not installable everywhere),
and what a render would not check: this book's rules for its output.

- structure: `_quarto.yml` describes a book whose home page `index.qmd` and every
  listed chapter exist, and no part has the title of its chapter (shown twice);
- labels are unique and follow Quarto's rules (lower case, a `fig-`/`tbl-`/`sec-`/
  `eq-` prefix, no `_` or `.`), figures and tables have captions, every reference
  (prose and captions) and every link to a chapter resolves, every citation is in
  the bibliography;
- answers: each record of `book/answers.yml` names a known question once, answers
  it, rests on experiments of `experiments/plan.yaml` and labels of the book;
- code: each chapter's cells and inline `` `{python} expr` `` values run in a fresh
  Jupyter kernel against the profile's results (missing results are said once,
  before any kernel starts); figure cells draw, table cells show something;
- output: an inline value is text, never empty, with no reference, citation or
  markdown (Quarto escapes them); a table shows no pandas index, no name from the
  code, no accuracy as a fraction, no "-0"; a figure fits the text column.

markdown-it-py reads the Markdown (code, prose, line numbers); Pandoc's own syntax
on top (`{#sec-x}` attributes, `@key`, `#|` options) is matched in the prose.
"""
from __future__ import annotations

import ast
import base64
import binascii
import difflib
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

import yaml
from markdown_it import MarkdownIt

from analysis import plots
from analysis.course import QUESTION_IDS
from analysis.paths import ANSWERS_FILE, DATA_ENV, PLAN_FILE, PROFILE_ENV, PROJECT_ROOT, RESULTS_ENV
from analysis.plots import COLUMN_INCHES

CONFIG_FILE = "_quarto.yml"
HOME_PAGE = "index.qmd"

CHAPTER_SUFFIXES = (".qmd", ".md")
CROSSREF_PREFIXES = ("fig", "tbl", "sec", "eq")
CAPTION_OPTIONS = ("fig-cap", "tbl-cap")
IMAGE_TYPES = ("image/png", "image/svg+xml", "image/jpeg", "application/pdf")
KERNEL = "python3"
KERNEL_STARTUP_S = 120
# Run first in every chapter's kernel, as Quarto's own setup does (with the figure
# defaults of `figure_setup`).
KERNEL_SETUP = "%matplotlib inline"

FIGURE_DPI = 96  # Quarto's HTML default `fig-dpi`, and the checker's when _quarto.yml has none
FIGURE_TOLERANCE_INCHES = 0.05  # bbox_inches="tight" rounds to whole pixels
# The bibliography Quarto reads, and the entry keys in it: `@article{he2016deep,`.
BIB_ENTRY = re.compile(r"^\s*@(?P<type>\w+)\s*[{(]\s*(?P<key>[^,\s]+)\s*,", re.MULTILINE)
BIB_NON_ENTRIES = ("comment", "string", "preamble")

# --- Reading Markdown.

# CommonMark with pipe tables. Without `text_join` an escape such as `\@` stays a
# token of its own, so the prose keeps its backslash and `\@x` is no citation.
MARKDOWN = MarkdownIt("commonmark").enable("table").disable("text_join")

# The info string of an executable cell: a language in braces, `{python}` or
# `{python echo=false}`; not `{.python}` (display only), `{=html}` (raw) nor
# `{{python}}` (Quarto's way to show a cell without running it).
CELL_INFO = re.compile(r"^\{(?P<lang>[A-Za-z][\w+-]*)(?:[\s,][^}]*)?\}$")

# A cell option at the top of a cell: `#| key: value` (YAML).
OPTION_LINE = re.compile(r"^#\|\s?(?P<yaml>.*)$")
OPTION_KEY = re.compile(r"^(?P<key>[\w-]+)\s*:")

# A live value in prose: the code span `{python} expr`.
INLINE_PYTHON = re.compile(r"^\{python\}\s+(?P<expr>.+)$", re.DOTALL)

# A link target with a scheme (https:, mailto:) or `//host` leaves the book.
EXTERNAL = re.compile(r"^(?:[A-Za-z][\w+.-]*:|//)")

# A Pandoc attribute block, as after a heading (`# Title {#sec-x}`), on a div
# (`::: {#fig-x}`), an image, an equation or a table caption; the id is the
# `#word` inside (`{.unnumbered #sec-x}` is valid too).
ATTRIBUTES = re.compile(r"\{(?P<attrs>[^{}\n]*)\}")
ATTRIBUTE_ID = re.compile(r"(?:^|\s)#(?P<id>[^\s}]+)")

# A reference, read the way Pandoc reads a citation: `@` not preceded by a
# word character (so `a@b.com` is an email) nor a backslash (escaped), then a
# key, or a key in braces. Keys may contain inner punctuation, but punctuation
# at the end belongs to the sentence: "see @fig-x." refers to fig-x.
REFERENCE = re.compile(r"(?<![\w@\\])@(?:\{(?P<quoted>[^}\s]+)\}|(?P<key>\w[\w:.#$%&\-+?<>~/]*))")
KEY_TRAILING_PUNCTUATION = ":.#$%&-+?<>~/"

# A cross-reference key: a prefix, capitalised or not (`@Fig-x` starts a
# sentence with "Figure"), a dash, a label name. Other keys are citations.
CROSSREF_KEY = re.compile(r"^(?P<prefix>fig|tbl|sec|eq|Fig|Tbl|Sec|Eq)-(?P<name>.+)$")

# An id that tries to be a cross-reference label: a known prefix in any case
# followed by `-`, `_` or `.`. Such ids must follow Quarto's rules; others
# (`{#intro}`, `#| label: setup`) are plain anchors and are left alone.
LABEL_LIKE = re.compile(r"^(?:fig|tbl|sec|eq)[-_.]", re.IGNORECASE)

# --- Reading what the kernel shows.

# What IPython writes for a frame of the failing cell: "Cell In[3], line 5".
CELL_FRAME = re.compile(r"Cell In\[(?P<count>\d+)\], line (?P<line>\d+)")
# Terminal colour codes in a traceback.
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
# numpy 2 scalars print as `np.float64(0.5)`; in prose that is a bug, not a number.
NUMPY_REPR = re.compile(r"^np\.\w+\(")

# Markdown in an inline value's plain text, which Quarto escapes, so that readers see
# it as typed: code, a link, strong or emphasis (`*x*`, `_x_`; not the `*` of
# "2 * 3" nor the `_` inside snake_case).
INLINE_MARKUP = re.compile(r"`[^`\n]+`|\[[^\]\n]*\]\([^)\n]*\)|\*\*[^*\n]+\*\*"
                           r"|(?<![\w*])\*(?![\s*])[^*\n]+?(?<![\s*])\*(?![\w*])"
                           r"|(?<!\w)_(?![\s_])[^_\n]+?(?<![\s_])_(?!\w)")

# pandas' HTML for a DataFrame, its rows and their cells.
DATAFRAME_HTML = re.compile(r'<table[^>]*class="dataframe')
HTML_TABLE = re.compile(r"<table.*?</table>", re.DOTALL)
HTML_ROW = re.compile(r"<tr[^>]*>(.*?)</tr>", re.DOTALL)
HTML_CELL = re.compile(r"<t[hd][^>]*>(.*?)</t[hd]>", re.DOTALL)

# What a table must not show readers: a name from the code (`weight_decay`, a
# Python value), accuracy as a fraction ("0.1008" under an accuracy header) or a
# negative number rounded to zero ("-0", "-0.0", "-0.00 points").
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
PYTHON_VALUES = ("None", "nan", "NaN")  # True and False can be verdicts: see _code_values
ACCURACY_HEADER = re.compile(r"\bacc(?:uracy)?\b", re.IGNORECASE)
FRACTION = re.compile(r"-?\d*\.\d+")
NEGATIVE_ZERO = re.compile(r"(?<![\w.])[-−]0(?:\.0+)?(?!\.?\d)")
MISSING_CELLS = ("", "–")


# --- What a check reports and what it reads.

@dataclass(frozen=True)
class Problem:
    """One thing to fix, at a file (relative to the book root) and a line when known;
    a problem of the whole check has no file."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}" if where else self.message


class Label(NamedTuple):
    """A label the book defines, where; `heading` for `# Title {#sec-x}`."""
    name: str
    file: str
    line: int
    heading: bool = False


class Reference(NamedTuple):
    """`@key` as written, and the label it asks for (`@Fig-x` asks for fig-x)."""
    key: str
    label: str
    file: str
    line: int


class Citation(NamedTuple):
    """`@key` (or `[@key]`) that is not a cross-reference: a bibliography entry."""
    key: str
    file: str
    line: int


class Inline(NamedTuple):
    """An inline live value `` `{python} expr` `` and the line it starts on."""
    line: int
    expr: str


class Link(NamedTuple):
    line: int
    target: str


@dataclass
class Cell:
    """An executable code cell: `line` is the line of its opening fence."""

    line: int
    lang: str
    source: str
    options: dict
    option_lines: dict[str, int]

    @property
    def label(self) -> str:
        return str(self.options.get("label") or "")


@dataclass
class Chapter:
    """What the checks need from one chapter file."""

    file: str  # relative to the book root, with `/`
    path: Path
    front_matter: dict = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    inline: list[Inline] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    title: str = ""  # front matter `title:`, else the first `# ` heading


@dataclass
class Book:
    """The book as `_quarto.yml` lists it: every listed file, the parsed
    chapters among them that exist, and what went wrong reading them."""

    root: Path
    config: dict
    listed: list[str]
    chapters: list[Chapter]
    problems: list[Problem]
    config_text: str = ""  # for the lines of problems in it


# --- Reading one chapter.

def parse_chapter(text: str, file: str, path: Path | None = None) -> Chapter:
    """Find the cells, inline values, labels, references, citations and links of a
    .qmd/.md chapter's text. `file` names it in problems."""
    chapter = Chapter(file=file, path=path or Path(file))
    lines = text.split("\n")
    start = _read_front_matter(lines, chapter)
    tokens = MARKDOWN.parse("\n" * start + "\n".join(lines[start:]))  # lines keep their numbers
    for n, token in enumerate(tokens):
        if token.type == "fence":
            _read_fence(token, lines, chapter)
        elif token.type == "inline" and token.map:
            first = token.map[0] + 1
            prose = _prose(token, first, chapter)
            _read_keys(chapter, prose, first)
            for m in ATTRIBUTES.finditer(prose):
                line = first + prose.count("\n", 0, m.start())
                heading = tokens[n - 1].type == "heading_open"
                chapter.labels += [Label(i["id"], file, line, heading)
                                   for i in ATTRIBUTE_ID.finditer(m["attrs"])
                                   if LABEL_LIKE.match(i["id"])]
            if not chapter.title and tokens[n - 1].tag == "h1":
                chapter.title = ATTRIBUTES.sub("", token.content).strip()
    for cell in chapter.cells:
        for option in CAPTION_OPTIONS:
            if isinstance(cell.options.get(option), str):
                _read_keys(chapter, cell.options[option], cell.option_lines.get(option, cell.line))
    chapter.labels.sort(key=lambda label: label.line)
    chapter.references.sort(key=lambda ref: ref.line)
    chapter.citations.sort(key=lambda cite: cite.line)
    chapter.title = str(chapter.front_matter.get("title") or chapter.title)
    return chapter


def _read_fence(token, lines: list[str], chapter: Chapter) -> None:
    """A fenced block: a cell when its info string is `{lang}`; a problem when it is
    never closed (it would swallow the rest of the chapter)."""
    begin, end = token.map
    closer = re.compile(rf"{re.escape(token.markup[0])}{{{len(token.markup)},}}\s*")
    if end - begin < 2 or not closer.fullmatch(lines[end - 1].lstrip(" \t>")):  # in a list too
        chapter.problems.append(Problem(chapter.file, begin + 1, f"code block opened with "
                                        f"{token.markup} is never closed"))
    cell_info = CELL_INFO.match(token.info.strip())
    if cell_info:
        body = token.content.removesuffix("\n").split("\n")
        chapter.cells.append(_parse_cell(cell_info["lang"], body, begin + 1, chapter))


def _prose(token, first: int, chapter: Chapter) -> str:
    """The text of one inline block (paragraph, heading, table cell) as Pandoc's syntax
    sees it, lines kept: escapes as written, code spans and HTML comments blanked. Inline
    values and links found on the way go into `chapter`."""
    text = ""
    for child in token.children:
        line = first + text.count("\n")
        if child.type in ("softbreak", "hardbreak"):
            text += "\n"
        elif child.type == "code_inline":
            inline = INLINE_PYTHON.match(child.content.strip())
            if inline:
                chapter.inline.append(Inline(line, inline["expr"].strip()))
            text += " " + "\n" * _span_breaks(token.content, text.count("\n"), child)
        elif child.type == "html_inline":
            text += "\n" * child.content.count("\n")
        elif child.type == "link_open":
            chapter.links.append(Link(line, child.attrs["href"]))
        else:  # text, an escape as written, an image's description, the rest ""
            text += child.markup if child.type == "text_special" else child.content
    return text


def _span_breaks(source: str, lines_before: int, span) -> int:
    """How many line breaks a code span wraps over: markdown-it gives its text with
    breaks turned into spaces, so find it in the block's source from its line on."""
    body = "[ \n]".join(map(re.escape, span.content.split(" ")))
    ticks = re.escape(span.markup)
    found = re.search(f"{ticks}[ \n]?{body}[ \n]?{ticks}", source.split("\n", lines_before)[-1])
    return found.group().count("\n") if found else 0


def _read_front_matter(lines: list[str], chapter: Chapter) -> int:
    """Parse the YAML front matter into `chapter.front_matter`; return the
    index of the first line after it (0 when there is none)."""
    if not lines or lines[0].strip() != "---":
        return 0
    end = next((j for j in range(1, len(lines)) if lines[j].strip() in ("---", "...")), None)
    if end is None:
        chapter.problems.append(Problem(chapter.file, 1, "front matter opened with --- "
                                        "is never closed"))
        return 0
    try:
        front_matter = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as error:
        chapter.problems.append(_yaml_problem(chapter.file, error, 2, "front matter is "))
        front_matter = {}
    if isinstance(front_matter, dict):
        chapter.front_matter = front_matter
    else:
        chapter.problems.append(Problem(chapter.file, 1, "front matter must be a YAML mapping"))
    return end + 1


def _parse_cell(lang: str, body: list[str], fence_line: int, chapter: Chapter) -> Cell:
    """A cell from the lines between its fences; its `#|` options parsed as YAML."""
    option_text, option_lines = [], {}
    for n, line in enumerate(body):
        m = OPTION_LINE.match(line)
        if not m:
            break
        option_text.append(m["yaml"])
        key = OPTION_KEY.match(m["yaml"])
        if key:
            option_lines.setdefault(key["key"], fence_line + 1 + n)
    try:
        options = yaml.safe_load("\n".join(option_text)) or {}
    except yaml.YAMLError as error:
        chapter.problems.append(_yaml_problem(chapter.file, error, fence_line + 1,
                                              "cell options are "))
        options = {}
    if not isinstance(options, dict):
        chapter.problems.append(Problem(chapter.file, fence_line + 1,
                                        "cell options must be `#| key: value` lines"))
        options = {}
    cell = Cell(fence_line, lang, "\n".join(body), options, option_lines)
    if cell.label:
        line = option_lines.get("label", fence_line)
        chapter.labels.append(Label(cell.label, chapter.file, line))
    return cell


def _read_keys(chapter: Chapter, text: str, first: int) -> None:
    """Add the cross-references and the citations in prose `text`, which starts at
    line `first`, to `chapter`."""
    for m in REFERENCE.finditer(text):
        key = m["quoted"] or m["key"].rstrip(KEY_TRAILING_PUNCTUATION)
        line = first + text.count("\n", 0, m.start())
        crossref = CROSSREF_KEY.match(key)
        if crossref:
            label = f"{crossref['prefix'].lower()}-{crossref['name']}"
            chapter.references.append(Reference(key, label, chapter.file, line))
        else:
            chapter.citations.append(Citation(key, chapter.file, line))


def _yaml_problem(file: str, error: yaml.YAMLError, first_line: int, what: str = "") -> Problem:
    """`what` (in `file`, from line `first_line` on) is not valid YAML, at the error's line."""
    mark = getattr(error, "problem_mark", None)
    reason = getattr(error, "problem", None) or str(error).splitlines()[0]
    return Problem(file, first_line + (mark.line if mark else 0), f"{what}not valid YAML: {reason}")


# --- Reading the book.

def read_book(root: Path) -> Book:
    """`_quarto.yml`, the list of chapters, and every listed chapter that exists, parsed."""
    root = Path(root).resolve()
    config_path = root / CONFIG_FILE
    if not config_path.exists():
        return Book(root, {}, [], [], [Problem(CONFIG_FILE, None, "not found: a Quarto book "
                                               "needs _quarto.yml at its root")])
    config_text = config_path.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as error:
        return Book(root, {}, [], [], [_yaml_problem(CONFIG_FILE, error, 1)])
    if not isinstance(config, dict):
        return Book(root, {}, [], [], [Problem(CONFIG_FILE, 1, "must be a YAML mapping")])

    problems = []
    project = config.get("project")
    project_type = project.get("type") if isinstance(project, dict) else None
    if project_type != "book":
        problems.append(Problem(CONFIG_FILE, _line_of(config_text, "project:"),
                                f"project: type: is {project_type!r}, not book"))
    listed = listed_files(config)
    if not listed:
        problems.append(Problem(CONFIG_FILE, _line_of(config_text, "book:"),
                                "book: chapters: lists no chapter"))
    if not (root / HOME_PAGE).exists():
        problems.append(Problem(HOME_PAGE, None, f"not found: the home page must sit next to "
                                f"{CONFIG_FILE} (Quarto: 'Book contents must include a "
                                "home page')"))
    if listed and HOME_PAGE not in listed:
        problems.append(Problem(CONFIG_FILE, _line_of(config_text, "chapters:"),
                                f"{HOME_PAGE} is not listed in book: chapters: (it must be, "
                                "as the home page)"))

    chapters, seen = [], set()
    for file in listed:
        line = _line_of(config_text, file)
        path = root / file
        if file in seen:
            problems.append(Problem(CONFIG_FILE, line, f"{file} is listed twice"))
            continue
        seen.add(file)
        if path.suffix not in CHAPTER_SUFFIXES:
            problems.append(Problem(CONFIG_FILE, line, f"{file}: a chapter must be one of "
                                    f"{', '.join(CHAPTER_SUFFIXES)}"))
        elif not path.is_file():
            unlisted = {p.relative_to(root).as_posix() for p in path.parent.glob("*.*md")}
            problems.append(Problem(CONFIG_FILE, line, f"chapter {file} does not exist"
                                    + _did_you_mean(file, unlisted - set(listed))))
        else:
            chapters.append(parse_chapter(path.read_text(encoding="utf-8"), file, path))
    return Book(root, config, listed, chapters, problems, config_text)


def listed_files(config: dict) -> list[str]:
    """Every file `book: chapters:` and `book: appendices:` list, in order."""
    book = config.get("book") or {}
    return _flatten(book.get("chapters")) + _flatten(book.get("appendices"))


def _flatten(entries) -> list[str]:
    """The files a `chapters:` list names, through parts (`- part: ... chapters: [...]`)."""
    return [file for entry in entries or [] for file in (
        [entry.strip().removeprefix("./")] if isinstance(entry, str)
        else _flatten(entry.get("chapters")) if isinstance(entry, dict) else [])]


def _line_of(text: str, needle: str) -> int | None:
    """The first line of `text` that contains `needle`, for problems in YAML files."""
    for n, line in enumerate(text.splitlines(), start=1):
        if needle in line and not line.lstrip().startswith("#"):
            return n
    return None


def _did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


# --- The static checks: each takes what it reads and returns problems.

def book_labels(book: Book) -> list[Label]:
    """Every label the book defines, in book order, duplicates included."""
    return [label for chapter in book.chapters for label in chapter.labels]


def label_rule_violation(name: str) -> str | None:
    """Why `name` breaks Quarto's label rules, or None when it follows them."""
    prefix = name.split("-", 1)[0]
    if name != name.lower():
        return "must be lower case"
    if "_" in name:
        return "must not contain `_` (use `-`)"
    if "." in name:
        return "must not contain `.` (it breaks PDF output)"
    if prefix not in CROSSREF_PREFIXES or name == f"{prefix}-":
        return f"must be a prefix ({', '.join(p + '-' for p in CROSSREF_PREFIXES)}) and a name"
    if not re.fullmatch(r"[a-z0-9-]+", name):
        return "may only contain lower-case letters, digits and `-`"
    return None


def check_labels(book: Book) -> list[Problem]:
    """Labels are unique across the book, follow Quarto's rules, sit on the
    right kind of element, and figures and tables have captions."""
    problems, first = [], {}
    for label in book_labels(book):
        if label.name in first:
            other = first[label.name]
            problems.append(Problem(label.file, label.line, f"label {label.name} is defined "
                                    f"twice (also at {other.file}:{other.line})"))
        else:
            first[label.name] = label
        reason = label_rule_violation(label.name)
        if reason:
            problems.append(Problem(label.file, label.line, f"label {label.name} {reason}"))
        elif label.heading and not label.name.startswith("sec-"):
            problems.append(Problem(label.file, label.line, f"heading id {label.name}: a "
                                    "section's label must start with sec-"))
    for chapter in book.chapters:
        for cell in chapter.cells:
            line = cell.option_lines.get("label", cell.line)
            for kind in ("fig", "tbl"):
                has_caption = f"{kind}-cap" in cell.options
                if cell.label.startswith(f"{kind}-") and not has_caption:
                    problems.append(Problem(chapter.file, line, f"{cell.label} has no "
                                            f"`#| {kind}-cap:` (Quarto numbers only captioned "
                                            "figures and tables)"))
                if has_caption and not cell.label.startswith(f"{kind}-"):
                    problems.append(Problem(chapter.file, cell.option_lines[f"{kind}-cap"],
                                            f"cell has a {kind}-cap but its label "
                                            f"{cell.label or '(none)'} does not start with "
                                            f"{kind}-, so Quarto will not number it"))
    return problems


def check_references(book: Book) -> list[Problem]:
    """Every cross-reference resolves to a label the book defines, and none
    points at a figure or table of the unnumbered home page."""
    defined = {label.name: label for label in reversed(book_labels(book))}  # the first wins
    problems = []
    for chapter in book.chapters:
        for ref in chapter.references:
            target = defined.get(ref.label)
            if target is None:
                problems.append(Problem(ref.file, ref.line, f"@{ref.key} does not resolve to "
                                        "any label" + _did_you_mean(ref.label, defined)))
            elif target.file == HOME_PAGE and not ref.label.startswith("sec-"):
                problems.append(Problem(ref.file, ref.line, f"@{ref.key} points into "
                                        f"{HOME_PAGE}, which is unnumbered: Quarto cannot "
                                        "number it; move it to a chapter"))
    return problems


def check_links(book: Book) -> list[Problem]:
    """Links to other chapters (`[text](lab1.qmd#sec-x)`) point at a listed chapter
    and, for a label anchor, at a label that chapter defines."""
    listed = {(book.root / file).resolve() for file in book.listed}
    labels_in: dict[Path, set[str]] = {}
    for label in book_labels(book):
        labels_in.setdefault((book.root / label.file).resolve(), set()).add(label.name)
    problems = []
    for chapter in book.chapters:
        for link in chapter.links:
            path_part, _, anchor = unquote(link.target).partition("#")
            if EXTERNAL.match(link.target) or not path_part.endswith(CHAPTER_SUFFIXES):
                continue
            target = (chapter.path.parent / path_part).resolve()
            reason = (f"{path_part} does not exist" if not target.is_file() else
                      f"{path_part} is not a chapter in {CONFIG_FILE}, so Quarto cannot "
                      "resolve the link" if target not in listed else
                      f"{path_part} defines no label {anchor}" if LABEL_LIKE.match(anchor)
                      and anchor not in labels_in.get(target, set()) else None)
            if reason:
                problems.append(Problem(chapter.file, link.line, f"link {link.target}: {reason}"))
    return problems


def check_parts(book: Book) -> list[Problem]:
    """No part has the title of a chapter inside it: Quarto prints the part's title
    page and then the chapter's heading, the same words twice."""
    problems = []
    titles = {chapter.file: chapter.title for chapter in book.chapters}
    for entry in (book.config.get("book") or {}).get("chapters") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("part"), str):
            continue
        part = entry["part"]
        for file in _flatten(entry.get("chapters")):
            if _same_title(part, titles.get(file, "")):
                problems.append(Problem(CONFIG_FILE, _line_of(book.config_text, part),
                                        f"part \"{part}\" has the title of its chapter {file}, "
                                        "so the book shows it twice: rename the part (or "
                                        "retitle the chapter)"))
    return problems


def _same_title(a: str, b: str) -> bool:
    def words(title: str) -> list[str]:
        return re.sub(r"[^\w]+", " ", title).casefold().split()
    return bool(words(a)) and words(a) == words(b)


def bib_keys(text: str) -> set[str]:
    """The entry keys of a BibTeX/BibLaTeX file (not @comment, @string, @preamble)."""
    return {m["key"] for m in BIB_ENTRY.finditer(text)
            if m["type"].lower() not in BIB_NON_ENTRIES}


def check_citations(book: Book) -> list[Problem]:
    """Every citation (`@key` that is no cross-reference) names an entry of the
    bibliography `_quarto.yml` names, and that file exists. Pandoc prints an unknown
    key as "?key"; without any bibliography the citation stays as raw `@key`."""
    names = book.config.get("bibliography") or []
    names = [names] if isinstance(names, str) else [n for n in names if isinstance(n, str)]
    problems, keys = [], set()
    for name in names:
        path = book.root / name
        if not path.is_file():
            problems.append(Problem(CONFIG_FILE, _line_of(book.config_text, name),
                                    f"bibliography {name} does not exist"))
        else:
            keys |= bib_keys(path.read_text(encoding="utf-8", errors="replace"))
    for chapter in book.chapters:
        for cite in chapter.citations:
            if not names:
                problems.append(Problem(cite.file, cite.line, f"@{cite.key} is a citation "
                                        "(no fig-/tbl-/sec-/eq- prefix) but the book has no "
                                        "bibliography: add `bibliography: references.bib` to "
                                        f"{CONFIG_FILE} with an entry {cite.key}, or fix the "
                                        "cross-reference"))
            elif cite.key not in keys:
                problems.append(Problem(cite.file, cite.line, f"citation @{cite.key} is not in "
                                        f"{' or '.join(names)}: add a `{cite.key}` entry"
                                        + _did_you_mean(cite.key, keys)))
    return problems


def figure_options(config: dict) -> dict:
    """Quarto's figure defaults for HTML, which Quarto hands to matplotlib: fig-width,
    fig-height (inches) and fig-dpi, from `format: html:` or the top of `_quarto.yml`."""
    formats = config.get("format") if isinstance(config.get("format"), dict) else {}
    html = formats.get("html") if isinstance(formats.get("html"), dict) else {}
    return {key: value for source in (config, html) for key, value in source.items()
            if key in ("fig-width", "fig-height", "fig-dpi") and isinstance(value, (int, float))}


def check_figure_defaults(book: Book) -> list[Problem]:
    """The `fig-width` `_quarto.yml` gives the HTML figures fits the column."""
    width = figure_options(book.config).get("fig-width", 0)
    if width <= COLUMN_INCHES + FIGURE_TOLERANCE_INCHES:
        return []
    return [Problem(CONFIG_FILE, _line_of(book.config_text, "fig-width"), f"fig-width "
                    f"{width} is wider than the {COLUMN_INCHES} in text column "
                    "(plots.COLUMN_INCHES)")]


def plan_experiments(root: Path) -> set[str]:
    """Names of the experiments `experiments/plan.yaml` defines (none without a plan)."""
    path = Path(root) / PLAN_FILE
    if not path.is_file():
        return set()
    plan = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return set((plan.get("experiments") or {}) if isinstance(plan, dict) else {})


def check_answers(book: Book) -> list[Problem]:
    """Every record of `book/answers.yml` is well formed, names a known
    question once, and rests on experiments and evidence that exist."""
    path = book.root / ANSWERS_FILE
    if not path.is_file():
        return [Problem(ANSWERS_FILE, None, "not found: one record per question "
                        "(id, answer, experiments, evidence)")]
    text = path.read_text(encoding="utf-8")
    try:
        records = yaml.safe_load(text) or []
        node = yaml.compose(text)
    except yaml.YAMLError as error:
        return [_yaml_problem(ANSWERS_FILE, error, 1)]
    if not isinstance(records, list):
        return [Problem(ANSWERS_FILE, 1, "must be a list of records (- id: ...)")]
    record_lines = [item.start_mark.line + 1 for item in node.value] if records else []

    defined = {label.name for label in book_labels(book)}
    try:
        experiments = plan_experiments(book.root)
    except yaml.YAMLError as error:
        return [_yaml_problem(PLAN_FILE, error, 1)]
    problems, seen = [], {}

    def report(line, message):
        problems.append(Problem(ANSWERS_FILE, line, message))

    for record, line in zip(records, record_lines, strict=True):
        if not isinstance(record, dict):
            report(line, "a record must be a mapping with id, answer, experiments, evidence")
            continue
        qid = record.get("id")
        name = f"answer {qid}"
        if qid is None:
            report(line, "a record has no `id:`")
        elif qid not in QUESTION_IDS:
            report(line, f"unknown question id {qid!r}" + _did_you_mean(str(qid), QUESTION_IDS))
        elif qid in seen:
            report(line, f"{name} is given twice (also at {ANSWERS_FILE}:{seen[qid]})")
        else:
            seen[qid] = line
        answer = record.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            report(line, f"{name} has no `answer:` text")
        if str(qid).startswith("tf-") and not isinstance(record.get("verdict"), bool):
            report(line, f"{name} needs `verdict: true` or `verdict: false`, "
                   f"not {record.get('verdict')!r}")
        if str(qid).startswith("tf-") and not (isinstance(record.get("reason"), str)
                                               and record["reason"].strip()):
            report(line, f"{name} needs `reason:`, the verdict's reason in one line (the "
                   "true/false chapter's summary table shows it)")
        for key, known, missing in (("experiments", experiments, f"is not in {PLAN_FILE}"),
                                    ("evidence", defined, "is not a label in the book")):
            values = record.get(key, [])
            if not isinstance(values, list):
                report(line, f"{name}: `{key}:` must be a list")
                continue
            for value in values:
                if value not in known:
                    report(line, f"{name}: {key.removesuffix('s')} {value} {missing}"
                           + _did_you_mean(str(value), known))
        if qid in QUESTION_IDS and f"sec-{qid}" not in defined:
            report(line, f"{name}: the book has no section {{#sec-{qid}}} for it")
    return problems


def unanswered(root: Path) -> list[str]:
    """Question ids without a record in `book/answers.yml` (all of them without the file)."""
    try:
        records = yaml.safe_load((Path(root) / ANSWERS_FILE).read_text(encoding="utf-8"))
        answered = {record.get("id") for record in records if isinstance(record, dict)}
    except (OSError, yaml.YAMLError, TypeError):
        answered = set()
    return [qid for qid in QUESTION_IDS if qid not in answered]


# --- Running the chapters' code.

def figure_setup(figure: dict | None = None) -> str:
    """The kernel setup: inline matplotlib with the figure size and dpi Quarto's own
    setup gives it (`figure`: fig-width, fig-height, fig-dpi), drawn as PNG so that
    the checker can measure each figure."""
    figure = {"fig-width": COLUMN_INCHES, "fig-height": 4, "fig-dpi": FIGURE_DPI, **(figure or {})}
    return (f"{KERNEL_SETUP}\n%config InlineBackend.figure_formats = ['png']\n"
            "import matplotlib as _mpl\n_mpl.rcParams.update({'figure.figsize': "
            f"({figure['fig-width']}, {figure['fig-height']}), 'figure.dpi': {figure['fig-dpi']}, "
            "'savefig.dpi': 'figure'})\ndel _mpl")


def chapter_notebook(chapter: Chapter, figure: dict | None = None):
    """The chapter's python cells (options kept) and one cell per inline
    value, in document order, after a setup cell (`figure_setup(figure)`).
    Returns the notebook and, per notebook cell, where it came from: a Cell,
    an Inline or None (setup). Cells with `eval: false` are left out;
    `error: true` cells and inline values are tagged so that the run goes on
    after them, as Quarto's does."""
    import nbformat

    runnable = [c for c in chapter.cells
                if c.lang == "python" and c.options.get("eval", True) is not False]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(figure_setup(figure)))
    origins: list = [None]
    for item in sorted(runnable + chapter.inline, key=lambda item: item.line):
        if isinstance(item, Cell):
            cell = nbformat.v4.new_code_cell(item.source)
            if item.options.get("error") is True:
                cell.metadata["tags"] = ["raises-exception"]
        else:
            # Quarto evaluates inline values as user expressions: a failing
            # one does not stop the chapter, so it must not stop ours.
            cell = nbformat.v4.new_code_cell(item.expr, metadata={"tags": ["raises-exception"]})
        nb.cells.append(cell)
        origins.append(item)
    return nb, origins


def kernel_env(results_dir=None, profile: str | None = None, data_dir=None) -> dict[str, str]:
    """The kernel's environment: ours, with DLBOOK_RESULTS, DLBOOK_DATA and
    DLBOOK_PROFILE set when given. Folders are made absolute, since kernels run in
    the project root, not where the user typed the command."""
    env = dict(os.environ)
    for name, given in ((RESULTS_ENV, results_dir), (DATA_ENV, data_dir)):
        folder = given if given is not None else env.get(name)
        if folder:
            env[name] = str(Path(folder).expanduser().resolve())
    if profile:
        env[PROFILE_ENV] = profile
    return env


def run_chapter(chapter: Chapter, *, cwd: Path, env: dict[str, str], timeout: int = 600,
                figure: dict | None = None) -> list[Problem]:
    """Execute the chapter's notebook in a fresh kernel, stopping at the first
    error as a render does; report errors, figure cells that drew no figure
    or one wider than the column, table cells that showed nothing or pandas'
    index, and inline values that are empty or carry markdown."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb, origins = chapter_notebook(chapter, figure)
    if len(origins) == 1:
        return []
    started = [0]  # index of the last cell the kernel started

    def on_cell_start(cell, cell_index, **_):
        started[0] = cell_index

    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout,
                            startup_timeout=KERNEL_STARTUP_S,
                            resources={"metadata": {"path": str(cwd)}},
                            on_cell_start=on_cell_start)
    halted = None
    # The kernel's own stderr (warnings, a crash) goes to a file, quoted only
    # when the kernel dies or does not start.
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as kernel_log:
        try:
            client.execute(env=env, stderr=kernel_log)
        except CellExecutionError:
            pass  # the error output of the cell says what happened
        except CellTimeoutError:
            halted = f"did not finish within {timeout} s"
        except DeadKernelError:
            halted = "killed the kernel" + _log_tail(kernel_log)
        except Exception as error:  # noqa: BLE001 - the kernel could not start
            return [Problem(chapter.file, None, f"could not run in a {KERNEL} kernel: "
                            f"{type(error).__name__}: {error}" + _log_tail(kernel_log))]
    return outcome_problems(chapter, nb, origins, started[0], halted)


def _log_tail(log, lines: int = 3) -> str:
    """The last lines the kernel wrote, less the warnings it always writes."""
    log.seek(0)
    said = [line.strip() for line in log.read().splitlines()
            if line.strip() and not line.startswith("[IPKernelApp] WARNING")]
    tail = said[-lines:]
    return f" (kernel said: {' | '.join(tail)})" if tail else ""


def outcome_problems(chapter: Chapter, nb, origins: list, last: int,
                     halted: str | None = None) -> list[Problem]:
    """Problems in an executed chapter notebook: `last` is the index of the
    last cell that ran, `halted` why the run stopped there if not by an error."""
    problems = []
    skipped = origins[last + 1:]
    n_inline = sum(isinstance(origin, Inline) for origin in skipped)
    after = (f"; nothing after it ran ({len(skipped) - n_inline} cell(s), {n_inline} inline "
             "value(s))") if skipped else ""
    for index in range(last + 1):
        cell, origin = nb.cells[index], origins[index]
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        allowed = isinstance(origin, Cell) and "raises-exception" in cell.metadata.get("tags", [])
        if halted and index == last:
            problems.append(Problem(chapter.file, getattr(origin, "line", None),
                                    f"{_describe(origin)} {halted}{after}"))
        elif errors and not allowed:
            error = errors[-1]
            line = _error_line(origin, error, cell.get("execution_count"))
            problems.append(Problem(chapter.file, line, f"{_describe(origin)} raised "
                                    f"{_exception_line(error)}" + (after if index == last else "")))
        elif not errors and isinstance(origin, Cell):
            problems += _output_problems(chapter, origin, cell.get("outputs", []))
        elif not errors and isinstance(origin, Inline):
            problems += _inline_problems(chapter, origin, cell.get("outputs", []))
    return problems


def _inline_problems(chapter: Chapter, origin: Inline, outputs: list) -> list[Problem]:
    """An inline value must be text: not a numpy repr, not empty (Quarto then leaves
    the source in the page) and, as a string, without references, citations or markdown
    (Quarto escapes a string's markdown characters: `@sec-x` turns into the citation
    `@sec` and "-x"; an `IPython.display.Markdown` value is inserted as markdown)."""
    shown = [o for o in outputs if o.output_type in ("execute_result", "display_data")]
    where = f"inline `{{python}} {origin.expr}`"
    if not shown:
        return [Problem(chapter.file, origin.line, f"{where} has no value (None), so Quarto "
                        "prints its source in the page; make the expression return text")]
    data = shown[-1].get("data", {})
    text, markdown = _joined(data.get("text/plain", "")), "text/markdown" in data
    if NUMPY_REPR.match(text) and not markdown:
        return [Problem(chapter.file, origin.line, f"{where} renders "
                        f"as {text!r}; convert it with int(), float() or a formatter")]
    value = _joined(data["text/markdown"]) if markdown else _string_value(text)
    if value is not None and not value.strip():
        return [Problem(chapter.file, origin.line, f"{where} is empty "
                        f"({'markdown' if markdown else text}), so Quarto prints its source in "
                        "the page; build optional phrases in a cell so that the inline value "
                        "is always text")]
    if markdown:
        return []
    reference = REFERENCE.search(value or "")
    markup = reference or INLINE_MARKUP.search(value or "")
    if markup:
        kind = "markdown" if not reference else "a reference" if CROSSREF_KEY.match(
            reference["quoted"] or reference["key"]) else "a citation"
        return [Problem(chapter.file, origin.line, f"{where} is text with {kind} "
                        f"({markup.group()!r} in {_shorten(value)!r}), which Quarto escapes, "
                        f"so readers see it as typed: write the "
                        f"{'reference' if reference else 'markup'} in the chapter text "
                        "(inline values carry numbers and plain words)")]
    return []


def _joined(text) -> str:
    """A notebook output's text, which nbformat may store as a list of lines."""
    return "".join(text) if isinstance(text, list) else text or ""


def _string_value(text: str) -> str | None:
    """The string a text/plain repr stands for (`'abc'` -> abc), None if not a string."""
    if not text or text[0] not in "'\"":
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def _shorten(text: str, size: int = 60) -> str:
    return text if len(text) <= size else text[:size - 3] + "..."


def _output_problems(chapter: Chapter, origin: Cell, outputs: list) -> list[Problem]:
    """A fig-* cell must draw, a tbl-* cell must show something; no cell may show a
    figure wider than the column, pandas' index or a table readers cannot read."""
    shown = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    label, line = origin.label, origin.option_lines.get("label", origin.line)
    problems = []
    if label.startswith("fig-") and not any(kind in o.get("data", {}) for o in shown
                                            for kind in IMAGE_TYPES):
        problems.append(Problem(chapter.file, line, f"{label} produced no figure (no image "
                                "output; was the figure closed, or never drawn?)"))
    elif label.startswith("tbl-") and not shown and not any(
            o.output_type == "stream" for o in outputs):
        problems.append(Problem(chapter.file, line, f"{label} produced no output to show as "
                                "a table"))
    for output in shown:
        for rows in shown_tables(output.get("data", {})):
            problems += [Problem(chapter.file, line, f"{label or 'a table'} {defect}")
                         for defect in table_defects(rows)]
    return problems + _figure_width_problems(chapter, origin, shown)


def shown_tables(data: dict) -> list[list[list[str]]]:
    """The tables one output shows, each as rows of cell texts as readers see them,
    header first: the Markdown of `plots.table`, or pandas' HTML."""
    markdown, html = _joined(data.get("text/markdown")), _joined(data.get("text/html"))
    if markdown:
        tables, in_cell = [], False
        for token in MARKDOWN.parse(markdown):
            if token.type == "table_open":
                tables.append([])
            elif token.type == "tr_open":
                tables[-1].append([])
            elif in_cell:  # the cell's text; a code span in it is code on purpose
                tables[-1][-1].append("".join(c.content for c in token.children
                                              if c.type in ("text", "text_special")).strip())
            in_cell = token.type in ("th_open", "td_open")
        return tables
    if not DATAFRAME_HTML.search(html):
        return []
    return [[[unescape(re.sub(r"<[^>]*>", "", cell)).strip() for cell in HTML_CELL.findall(row)]
             for row in HTML_ROW.findall(table)] for table in HTML_TABLE.findall(html)]


def table_defects(rows: list[list[str]]) -> list[str]:
    """What a table (header row first) shows that readers should not see: a name from
    the code, accuracy as a fraction where the book writes percent, a "-0"."""
    defects = []
    if len(rows) > 1 and rows[0][:1] == [""] and all(re.fullmatch(r"-?\d+", row[0])
                                                     for row in rows[1:] if row):
        defects.append("shows pandas' default integer index as a first column: show it with "
                       "plots.table(df) (a Markdown table without the index)")
    for k, header in enumerate(rows[0] if rows else []):
        column = [row[k] for row in rows[1:] if k < len(row)]
        code = [t for t in dict.fromkeys([header, *column]) if SNAKE_CASE.fullmatch(t)
                or t in PYTHON_VALUES or t in _code_values(header)]
        if code:
            defects.append(f"shows names from the code ({', '.join(map(repr, code[:3]))} in "
                           f"column {header!r}): say them in words (plots.readable, "
                           "plots.COLUMN_NAMES or table(names=...))")
        numbers = [t for t in column if t not in MISSING_CELLS]
        if ACCURACY_HEADER.search(header) and "point" not in header and numbers and all(
                FRACTION.fullmatch(t) and 0 <= float(t) <= 1 for t in numbers):
            defects.append(f"shows accuracy as a fraction ({numbers[0]} in column {header!r}) "
                           "where the book writes percent: convert it with plots.percent")
        zero = [t for t in column if NEGATIVE_ZERO.search(t)]
        if zero:
            defects.append(f"shows {zero[0]!r} (column {header!r}), a negative number rounded "
                           "to zero: add 0.0 after rounding, or show 0")
    return defects


def _code_values(header: str) -> set[str]:
    """What a column named after a parameter shows in the code's words: a value that
    `plots.readable` puts in words (`relu` under "activation"), True or False."""
    names = [name for name in plots.PARAMETER_NAMES if header in (name, plots.label(name))]
    return {str(code) for name in names for code, word in plots.VALUE_NAMES.get(name, {}).items()
            if str(code) != word} | ({"True", "False"} if names else set())


def _figure_width_problems(chapter: Chapter, origin: Cell, shown: list) -> list[Problem]:
    """Every PNG a cell shows fits the text column: its width in inches, pixels over
    its dpi (the PNG's pHYs chunk, else FIGURE_DPI), is at most COLUMN_INCHES."""
    problems = []
    line = origin.option_lines.get("label", origin.line)
    for output in shown:
        png = output.get("data", {}).get("image/png")
        size = png_size(png) if png else None
        if size is None:
            continue
        width, _, dpi = size
        inches = width / dpi
        if inches > COLUMN_INCHES + FIGURE_TOLERANCE_INCHES:
            problems.append(Problem(chapter.file, line, f"{origin.label or 'a figure'} is "
                                    f"{inches:.1f} in wide ({width} px at {dpi:.0f} dpi), "
                                    f"wider than the {COLUMN_INCHES} in text column: narrow it "
                                    "(figsize, or seaborn height × aspect × columns; legend "
                                    "inside or below the axes)"))
    return problems


def png_size(data) -> tuple[int, int, float] | None:
    """(width px, height px, dpi) of a PNG given as bytes or base64 text; dpi from
    its pHYs chunk when it has one in pixels per metre, else FIGURE_DPI."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = data if isinstance(data, bytes) else base64.b64decode(_joined(data))
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
            return *image.size, float(image.info.get("dpi", (FIGURE_DPI,))[0])
    except (binascii.Error, ValueError, UnidentifiedImageError):
        return None


def _describe(origin) -> str:
    if origin is None:
        return f"the kernel setup `{KERNEL_SETUP}`"
    if isinstance(origin, Inline):
        return f"inline `{{python}} {origin.expr}`"
    return f"cell {origin.label}" if origin.label else "python cell"


def _error_line(origin, error, execution_count: int | None) -> int | None:
    """The .qmd line of the failing statement: the innermost traceback frame
    in this cell (not in a function an earlier cell defined), counted from
    the cell's fence; else the fence itself."""
    if not isinstance(origin, Cell):
        return getattr(origin, "line", None)
    traceback = ANSI_CODE.sub("", "\n".join(error.get("traceback", [])))
    lines = [int(m["line"]) for m in CELL_FRAME.finditer(traceback)
             if m["count"] == str(execution_count)]
    return origin.line + lines[-1] if lines else origin.line


def _exception_line(error) -> str:
    """`Name: value`, the last line of a printed traceback, kept to one short line."""
    value = " ".join(str(error.get("evalue", "")).split())
    if len(value) > 300:
        value = value[:297] + "..."
    return f"{error.get('ename', 'Error')}: {value}" if value else error.get("ename", "Error")


def run_book(book: Book, *, results_dir=None, profile: str | None = None, timeout: int = 600,
             progress: Callable[[str], None] | None = None, data_dir=None) -> list[Problem]:
    """Run every listed .qmd chapter, the home page too, one fresh kernel each, in
    the book's root (`execute-dir: project`); without the profile's results, say so
    once instead."""
    env = kernel_env(results_dir, profile, data_dir)
    missing = results_missing(env, book.root)
    if missing:
        return [missing]
    problems = []
    for chapter in book.chapters:
        if chapter.path.suffix != ".qmd":
            continue  # Quarto does not execute .md
        if progress:
            progress(f"running {chapter.file}")
        problems += run_chapter(chapter, cwd=book.root, env=env, timeout=timeout,
                                figure=figure_options(book.config))
    return problems


def results_missing(env: dict[str, str], root: Path) -> Problem | None:
    """The one problem to report, before any kernel starts, when the profile that the
    kernels (environment `env`) read has no results: else every chapter stops at its
    first read with the same error, after minutes of imports."""
    from analysis import plan, results

    try:  # relative to the book root, where the kernels look
        results.load_index(plan.resolve_profile(env.get(PROFILE_ENV)),
                           root / env.get(RESULTS_ENV, "results"))
    except (results.ResultsMissing, plan.PlanError) as error:
        return Problem("", None, f"{error}; no chapter was run, only the static checks")
    return None


# --- The whole check, and its command.

def check(root: Path, *, execute: bool = True, results_dir=None, profile: str | None = None,
          timeout: int = 600, progress: Callable[[str], None] | None = None,
          data_dir=None) -> list[Problem]:
    """Every problem of the book at `root`: the static checks, then (with
    `execute`) each chapter's code run against the results in `results_dir`
    (default: $DLBOOK_RESULTS or ./results) for `profile`. `timeout` bounds
    each cell in seconds."""
    book = read_book(root)
    problems = book.problems + [p for chapter in book.chapters for p in chapter.problems]
    if not book.config:
        return problems
    for static in (check_labels, check_references, check_links, check_answers, check_parts,
                   check_citations, check_figure_defaults):
        problems += static(book)
    if execute:
        problems += run_book(book, results_dir=results_dir, profile=profile, timeout=timeout,
                             progress=progress, data_dir=data_dir)
    return problems


def find_root(start: Path | None = None) -> Path:
    """The folder at or above `start` (default: here) holding `_quarto.yml`,
    else the project this package belongs to."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return PROJECT_ROOT


def cli(args) -> int:
    """`dlbook check [--no-execute] [--results DIR] [--profile P] [--data-dir DIR]`."""
    root = find_root()
    problems = check(root, execute=not args.no_execute, results_dir=args.results,
                     profile=args.profile, data_dir=args.data_dir,
                     progress=lambda message: print(message, file=sys.stderr, flush=True))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in the book at {root}")
        return 1
    book, missing = read_book(root), unanswered(root)
    print(f"book OK: {len(book.listed)} chapters, {len({x.name for x in book_labels(book)})} "
          f"labels, {sum(len(c.references) for c in book.chapters)} references, "
          f"{len(QUESTION_IDS) - len(missing)} answers"
          + (" (code not executed)" if args.no_execute else ""))
    if missing:
        print(f"note: no answer record yet for {', '.join(missing)}")
    return 0

