"""Every figure README.md and docs/performance.md quote is in a results file under benchmarks/results/.

A benchmark script keeps what it measured in ``benchmarks/results/NAME.md`` (with the date, device, versions
and command); the docs quote those files. This fails when a page quotes a number that no results file holds.

What counts as a figure, in the pages' prose and tables once code is removed (fenced and indented code blocks
and inline ``code`` spans: commands, flags, paths, identifiers, formulas) and link targets dropped:

- a number with a decimal point (``0.47``, ``1.123``) or a thousands separator (``6,561``);
- a number followed by ``%``, by a ratio sign (``0.47×``, ``1.80x``), by a unit of time (``s``, ``ms``,
  ``min``, ``minutes``, ``h``, ``hours``), by ``K`` or ``M`` (``499 K`` params: compared at that scale) or by
  ``SE`` / ``standard errors``; or either side of ``±``. In a range (``16-36 s``, ``0.81–1.1``) every end
  takes the unit after the last;
- a number that is a markdown table cell on its own (``| 0 |``, ``| **0.47×** |``).

Not figures: a number that is part of a name or word (``ResNet-20``, ``CIFAR-10``, ``EfficientNetV2``,
``t10k``, ``H100``) or of a compound adjective (``2-core``, ``3-epoch``, ``12,000-image``); version numbers
(``Python 3.10``, ``2.13.0``); dates (``2026-12``); list numbering; and any other whole number in prose
(``3 seeds``, ``48 trials``, ``Table 12``): counts and settings the sentence states, not measurements.
``EXEMPT`` names the few settings and targets written with a decimal point or a unit, each by its exact
phrase; ``DERIVED`` the differences of two values of one results file, with both values, which
``test_derived_figures_follow_from_their_file`` finds in the file and subtracts again.

A figure is backed when a number in a results file (``*-quick`` files never count: docs never quote them) is
the same string once thousands separators are dropped, or a plain rounding of it to fewer decimals: the
file's number has at least as many decimals as the figure and lies within half a unit of the figure's last
place. Where a ``##`` section names results files (``benchmarks/results/NAME.md``), its figures must come
from those; a section that names none may quote any. Signs are not compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", ROOT / "docs" / "performance.md"]

# Settings and targets written like figures: exact phrase -> why it is not a measurement.
EXEMPT = {
    "width 0.5, depth 0.25": "search_efficiency's base network (its SPACE), a setting",
    "over the 5 minutes aimed for": "the suite's time target, not a measurement",
    "within its 90 s target": "the quick subset's time target, not a measurement",
}
# Differences of two values of one results file, as figures: figure -> (file, minuend, subtrahend).
DERIVED: dict[str, tuple[str, str, str]] = {
}

NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
TIME_UNIT = re.compile(r"\s?(?:ms|s|min|minutes?|seconds?|h|hours?)(?![\w])")
SCALE_UNIT = re.compile(r"\s?([KM])(?![\w])")
RATIO = re.compile(r"\*{0,2}\s?×|x(?![\w])")
SE_UNIT = re.compile(r"\s?(?:SE|standard errors?)(?![\w])")
RANGE_DASH = "-–—"
CELL = re.compile(r"^\s*(?:\*\*)?[+\-−]?(?:\*\*)?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
                  r"\s?(?:%|×|x|ms|s|K|M|SE)?(?:\*\*)?\s*$")


@dataclass(frozen=True)
class Figure:
    text: str  # the number as written, thousands separators dropped
    scale: int  # 1, or 1,000 / 1,000,000 for K / M
    line: int  # 1-based line in the page


def _blank(text: str, start: int, end: int) -> str:
    """Replace text[start:end] by spaces, keeping newlines, so offsets and line numbers stay."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def _strip(markdown: str) -> str:
    """The page with everything that holds no figure blanked: code, link targets, versions, dates, numbering."""
    text = markdown
    for match in list(re.finditer(r"^```.*?^```[^\n]*$", text, re.M | re.S)):  # fenced code blocks
        text = _blank(text, *match.span())
    lines = text.split("\n")
    in_code = False
    for i, line in enumerate(lines):  # indented code blocks: 4 spaces after a blank line, up to a dedent
        if line.startswith("    ") and (in_code or i == 0 or not lines[i - 1].strip()):
            in_code = True
            lines[i] = " " * len(line)
        elif line.strip():
            in_code = False
    text = "\n".join(lines)
    patterns = [r"`(?:[^`\n]|\n(?![ \t]*\n))*`",  # inline code, which may wrap a line
                r"\]\([^)\s]*\)",  # link targets
                r"(?i)\b(?:python|torch|optuna|effnas|scikit-learn|cuda|version)\s+v?\d+(?:\.\d+)+",  # versions
                r"\d+\.\d+\.\d+[\w.+-]*",  # any x.y.z version
                r"\b(?:19|20)\d\d-\d\d(?:-\d\d)?(?:[ T]\d\d:\d\d)?",  # dates
                r"(?m)^\s*\d+\.(?=\s)"]  # numbered lists
    patterns += [r"\s+".join(map(re.escape, phrase.split())) for phrase in EXEMPT]  # across line breaks
    for pattern in patterns:
        for match in list(re.finditer(pattern, text)):
            start, end = match.span()
            if pattern == r"\]\([^)\s]*\)":
                start += 1  # keep the "]"
            text = _blank(text, start, end)
    return text


def _unit_after(text: str, end: int) -> tuple[bool, int]:
    """Whether the number ending at ``end`` carries a figure's mark after it, and its scale (K, M)."""
    after = text[end:end + 24]
    if after.startswith("%") or after.startswith(" %"):
        return True, 1
    if (match := RATIO.match(after)) and not re.match(r"\s?\d", after[match.end():]):
        return True, 1
    if re.match(r"\s?±", after):
        return True, 1
    if TIME_UNIT.match(after) or SE_UNIT.match(after):
        return True, 1
    if match := SCALE_UNIT.match(after):
        return True, 1000 if match.group(1) == "K" else 1_000_000
    return False, 1


def _cell_numbers(text: str) -> set[int]:
    """Offsets of numbers that are a table cell on their own."""
    offsets = set()
    position = 0
    for line in text.split("\n"):
        if line.lstrip().startswith("|") and not re.fullmatch(r"[\s|:\-]*", line):
            column = position
            for cell in line.split("|"):
                if match := CELL.match(cell):
                    offsets.add(column + match.start(1))
                column += len(cell) + 1
        position += len(line) + 1
    return offsets


def figures(markdown: str) -> list[Figure]:
    """Every figure in a markdown page, by the module's rule."""
    text = _strip(markdown)
    cells = _cell_numbers(text)
    found: list[tuple[int, int, str, bool, int]] = []  # start, end, number, marked, scale
    for match in NUMBER.finditer(text):
        start, end = match.span()
        before = text[max(0, start - 2):start]
        after = text[end:end + 2]
        if before and (before[-1].isalnum() or before[-1] in "_." or (before[-1] in "-/" and before[0].isalpha())):
            continue  # part of a name: ResNet-20, V2, t10k, k5, 3/5
        if after[:1].isalpha() and not re.match(r"(?:x|s|ms|K|M)(?![\w])", text[end:end + 3]):
            continue  # part of a word or a name: 10k, B0x
        if after[:1] == "-" and after[1:2].isalpha():
            continue  # a compound adjective: 2-core, 12,000-image
        marked, scale = _unit_after(text, end)
        marked = marked or "." in match.group() or "," in match.group() or start in cells
        marked = marked or bool(re.search(r"±\s?$", text[max(0, start - 3):start]))
        found.append((start, end, match.group(), marked, scale))
    # A range's ends share the unit after the last: 16-36 s, 0.81–1.1, 1.26–1.29×.
    for i in range(len(found) - 2, -1, -1):
        start, end, number, marked, scale = found[i]
        following = found[i + 1]
        if following[0] == end + 1 and text[end] in RANGE_DASH and following[3]:
            found[i] = (start, end, number, True, following[4] if scale == 1 else scale)
    return [Figure(number.replace(",", ""), scale, text.count("\n", 0, start) + 1)
            for start, _, number, marked, scale in found if marked]


def file_numbers(path: Path) -> list[str]:
    """The numbers a results file holds, as written, thousands separators dropped (JSON and CSV: none)."""
    text = path.read_text(encoding="utf-8")
    pattern = NUMBER if path.suffix == ".md" else re.compile(r"\d+(?:\.\d+)?")
    return [number.replace(",", "") for number in pattern.findall(text)]


def _decimals(number: str) -> int:
    return len(number.split(".")[1]) if "." in number else 0


def backs(value: str, figure: Figure) -> bool:
    """Whether a results file's number is the figure, or rounds to it."""
    if figure.scale == 1:
        if value == figure.text:
            return True
        if _decimals(value) < _decimals(figure.text):
            return False
    half = Decimal(5) / Decimal(10) ** (_decimals(figure.text) + 1)
    return abs(Decimal(value) / figure.scale - Decimal(figure.text)) <= half


def results_files(directory: Path = RESULTS) -> dict[str, Path]:
    return {path.name: path for path in sorted(directory.iterdir())
            if path.suffix in (".md", ".json", ".csv") and not path.stem.endswith("-quick")}


def unbacked(markdown: str, directory: Path = RESULTS) -> list[tuple[int, str]]:
    """(line, figure) for each figure of a page that no results file holds."""
    files = results_files(directory)
    numbers = {name: file_numbers(path) for name, path in files.items()}
    lines = markdown.split("\n")
    starts = [0] + [i for i, line in enumerate(_strip(markdown).split("\n")) if re.match(r"#{1,2} ", line)]
    missing = []
    for figure in figures(markdown):
        first = max(start for start in starts if start < figure.line)
        end = min([start for start in starts if start >= figure.line] + [len(lines)])
        named = set(re.findall(r"benchmarks/results/([\w.\-]+\.(?:md|json|csv))", "\n".join(lines[first:end])))
        sources = [name for name in named if name in files] if named else list(files)
        if figure.text in DERIVED and DERIVED[figure.text][0] in sources:
            continue
        if not any(backs(value, figure) for name in sources for value in numbers[name]):
            missing.append((figure.line, figure.text + {1: "", 1000: " K", 1_000_000: " M"}[figure.scale]))
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_figure_is_in_a_results_file(page):
    missing = unbacked(page.read_text(encoding="utf-8"))
    assert not missing, f"{page.relative_to(ROOT)}: figures in no results file: " + ", ".join(
        f"line {line}: {figure}" for line, figure in missing)


def test_a_made_up_figure_is_reported():
    page = ("## Timing\n\nEach step took 0.12345 s, 41.37× the reference, on 2 cores.\n\n"
            "| a | b |\n|---|---|\n| x | 98,765 |\n")
    assert unbacked(page) == [(3, "0.12345"), (3, "41.37"), (7, "98765")]


def test_a_section_quotes_only_the_results_files_it_names(tmp_path):
    (tmp_path / "threads.md").write_text("idle  5.24 s\n")
    (tmp_path / "suite_time.md").write_text("full  407.8 s\n")
    (tmp_path / "threads-quick.md").write_text("idle  9.9 s\n")
    page = ("## Threads\n\n[results](../benchmarks/results/threads.md): 5.2 s idle.\n\n"
            "## Suite\n\n[results](../benchmarks/results/suite_time.md): 5.2 s idle.\n\n"
            "## Anything\n\n5.2 s, 407.8 s, 9.9 s.\n")
    assert unbacked(page, tmp_path) == [(7, "5.2"), (11, "9.9")]


def test_the_rule_reads_figures_not_names_counts_or_code():
    page = ("ResNet-20 on CIFAR-10 (t10k, 2-core, 12,000-image), 3 seeds, Python 3.10, 2026-12, `--time\n180.5s`:\n\n"
            "    reward = 0.07 x 1.5\n\n"
            "1. 0.47× and 1.123 ± 0.014 in 16-36 s, 499 K params, 0.81–1.1, +7.4 SE, 9.3 %, 6,561 of 8×8.\n")
    assert [(f.text, f.scale) for f in figures(page)] == [
        ("0.47", 1), ("1.123", 1), ("0.014", 1), ("16", 1), ("36", 1), ("499", 1000),
        ("0.81", 1), ("1.1", 1), ("7.4", 1), ("9.3", 1), ("6561", 1)]


def test_rounding_is_to_fewer_decimals_only():
    assert backs("1.1185", Figure("1.119", 1, 1)) and backs("1.1185", Figure("1.118", 1, 1))
    assert backs("26.9", Figure("27", 1, 1)) and backs("1,199,882".replace(",", ""), Figure("1.2", 1_000_000, 1))
    assert not backs("1.1", Figure("1.10", 1, 1)) and not backs("0.472", Figure("0.48", 1, 1))


def test_derived_figures_follow_from_their_file():
    files = results_files()
    for figure, (name, minuend, subtrahend) in DERIVED.items():
        assert {minuend, subtrahend} <= set(file_numbers(files[name])), (figure, name)
        assert Decimal(figure) == abs(Decimal(minuend) - Decimal(subtrahend)), figure


def test_exempt_phrases_are_still_quoted():
    text = " ".join(" ".join(page.read_text(encoding="utf-8").split()) for page in PAGES)
    assert [phrase for phrase in EXEMPT if phrase not in text] == []
