"""The summary of findings, and whether every answer agrees with its own numbers.

Checked on two pages: one rendered from the full-preset results shipped with
droplab, and one from a real ``droplab report --preset quick`` run. Each summary
row must be one seed question (all of them, in the registry's order, for the
quick run), with an answer of at most MAX_WORDS words, a headline number with
its 95 % interval (or the reason it has none) and a link to its section. Every
answer sentence, short or full, must agree with the intervals it quotes: a
"no detectable difference" quotes no interval that excludes the null unless it
names Holm's correction, and a sentence that says one side is better, raises or
lowers something detectably quotes an interval on that side of 0.
"""

from __future__ import annotations

import html
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from droplab import cli
from droplab.lab.compare import detectable
from droplab.lab.registry import experiment_names, get_experiment
from droplab.lab.report.render import value_range
from droplab.lab.report.summary import (
    HEADLINE_POINTS,
    MAX_WORDS,
    SEED_QUESTIONS,
    forest_rows,
    headline,
    short_answer,
)
from droplab.lab.results import load_result, result_path

NUMBER = r"[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
INTERVAL = re.compile(rf"\[({NUMBER})\*?, ({NUMBER})\*?\]")
NULL_CLAIM = re.compile(
    r"no detectable difference|no difference is detectable|not detectably|no detectably"
    r"|no detectable \w+|indistinguishable|show no difference",
    re.IGNORECASE,
)
# "A is better than B by 2.06 points ... [1.30, 2.82]": a positive lead.
LEAD = re.compile(
    rf"(?:\b(?:better|ahead|larger|higher|sparser) than|\bexceeds)\b[^;\[]*?\bby ({NUMBER})"
    rf"[^;\[]*?\[({NUMBER}), ({NUMBER})\]"
)
# "dropout raises test accuracy detectably with ...": a list of signed cells.
DIRECTION = re.compile(r"\b(raises|lowers) [\w ]+? detectably with\b")
NO_SPREAD = "(no spread: no interval)"


def _clauses(text: str) -> list[list[str]]:
    """Sentences, each cut into clauses at '; ', ', and ' and ' and not/no '."""
    sentences = re.split(r"(?<=\.)\s+(?=[A-Z(])", text)
    cut = r";\s+|,\s+and\s+|\s+and\s+(?=not |no )"
    return [re.split(cut, sentence) for sentence in sentences]


def _null(before: str) -> float:
    """The value of "no difference": 1 for a ratio ("1.28x [", "ratio 0.99 ["), else 0."""
    tail = before[-40:]
    return 1.0 if re.search(r"\dx\s*$", tail) or "ratio" in tail else 0.0


def disagreements(text: str) -> list[str]:
    """The clauses of ``text`` that contradict an interval they quote."""
    found = []
    for sentence in _clauses(text):
        direction = 0
        for clause in sentence:
            if DIRECTION.search(clause):
                direction = 1 if DIRECTION.search(clause)[1] == "raises" else -1  # type: ignore[index]
            elif NULL_CLAIM.search(clause):
                direction = 0
            intervals = list(INTERVAL.finditer(clause))
            holm = "holm" in clause.lower()
            if NULL_CLAIM.search(clause) and not holm:
                for m in intervals:
                    low, high = float(m[1]), float(m[2])
                    null = _null(clause[: m.start()])
                    if not low <= null <= high:
                        found.append(
                            f"no-difference claim, interval excludes {null}: {clause}"
                        )
            for lead in LEAD.finditer(clause):
                size, low, high = (float(v) for v in lead.groups())
                # (an end printed as 0.0 is a positive one, rounded)
                if not (low >= 0 and low <= size <= high):
                    found.append(f"a lead whose interval is not positive: {clause}")
            if direction and not NULL_CLAIM.search(clause):
                for m in intervals:
                    low, high = float(m[1]), float(m[2])
                    if (direction > 0 and low <= 0) or (direction < 0 and high >= 0):
                        found.append(f"sign differs from its interval: {clause}")
    return found


def test_the_checker_catches_contradictions() -> None:
    """Guard against a checker that passes everything."""
    assert disagreements(
        "no detectable difference in test error between A and B "
        "(difference 2.00 points, 95 % interval [1.00, 3.00])."
    )
    assert not disagreements(
        "A (+6.55 points, unadjusted 95 % interval [1.24, 11.85] excludes 0, but "
        "Holm-adjusted p = 0.2) show no difference from B detectable after Holm."
    )
    assert disagreements("It takes no detectably different number: 1.5x [1.2, 1.9].")
    assert not disagreements("no detectably different number: 1.2x [0.9, 1.6].")
    assert not disagreements(
        "MC spread is larger beyond the data (+0.149 [+0.131, +0.168]) and not "
        "detectably larger in the gap."
    )
    assert disagreements(
        "A is better than B by 2.00 points (95 % interval of the difference "
        "[-1.00, 5.00])."
    )
    assert disagreements(
        "The network: test error exceeds training error by -0.1 points [-5.4, 5.2]."
    )
    assert not disagreements(
        "Test error exceeds training error by 1.2 points [0.0, 2.4]."
    )
    assert disagreements(
        "dropout raises test accuracy detectably with 300 examples (+4.3 points "
        "[+3.2, +5.4]); 1000 examples (+0.5 points [-1.0, +2.0])."
    )
    assert not disagreements(
        "dropout raises test accuracy detectably with 300 examples (+4.3 points "
        "[+3.2, +5.4]); it lowers test accuracy detectably with 10000 examples "
        "(-4.1 points [-6.0, -2.1]); no difference is detectable after Holm in 1."
    )


# ----------------------------------------------------------------- the two pages


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], str]:
    """A real ``droplab report --preset quick`` of every experiment."""
    out = tmp_path_factory.mktemp("quick") / "report"
    assert cli.main(["report", "--preset", "quick", "--out", str(out)]) == 0
    records = [
        load_result(result_path(out / "results", n), n) for n in experiment_names()
    ]
    return records, (out / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def saved_report() -> tuple[list[dict[str, Any]], str]:
    """The report folder DROPLAB_REPORT names (a real ``droplab report`` run of
    any preset, e.g. the default one: too slow to run inside the suite)."""
    out = Path(os.environ["DROPLAB_REPORT"])
    records = [
        load_result(result_path(out / "results", n), n)
        for n in experiment_names()
        if result_path(out / "results", n).exists()
    ]
    return records, (out / "index.html").read_text(encoding="utf-8")


# fixtures: this file's and conftest's, and a saved run where one is named
PAGES = ["quick", "shipped_page"] + (
    ["saved_report"] if os.environ.get("DROPLAB_REPORT") else []
)


def _page(
    request: pytest.FixtureRequest, which: str
) -> tuple[list[dict[str, Any]], str]:
    page: tuple[list[dict[str, Any]], str] = request.getfixturevalue(which)
    return page


def _rows(page: str) -> list[dict[str, str]]:
    start = page.index('<section id="summary">')
    summary = page[start : page.index("</section>", start)]
    body = summary[summary.index("<tbody>") : summary.index("</tbody>")]
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        link = re.search(r'<a href="#([^"]+)">(.*?)</a>', cells[0], flags=re.S)
        assert link, row
        answer, _, decided = cells[1].partition("<br>")
        rows.append({
            "name": link[1], "question": html.unescape(link[2]),
            "answer": html.unescape(re.sub(r"<[^>]+>", "", answer)),
            "decided": html.unescape(re.sub(r"<[^>]+>", "", decided)),
            "headline": html.unescape(cells[2]),
        })  # fmt: skip
    return rows


@pytest.mark.parametrize("which", PAGES)
def test_one_summary_row_per_seed_question_with_a_link_to_its_section(
    request: pytest.FixtureRequest, which: str
) -> None:
    records, page = _page(request, which)
    rows = _rows(page)
    names = [str(r["name"]) for r in records]
    assert [row["name"] for row in rows] == names
    if which == "quick":  # every experiment ran: every seed question has its row
        assert names == experiment_names() and len(rows) == len(SEED_QUESTIONS) == 14
    for row in rows:
        assert row["question"] == SEED_QUESTIONS[row["name"]]
        assert f'<section id="{row["name"]}">' in page


@pytest.mark.parametrize("which", PAGES)
def test_each_answer_fits_in_25_words(
    request: pytest.FixtureRequest, which: str
) -> None:
    assert MAX_WORDS == 25
    for row in _rows(_page(request, which)[1]):
        assert 5 <= len(row["answer"].split()) <= MAX_WORDS, row
        if row["decided"]:  # "Full preset (10 seeds, date): <its short answer>"
            assert re.match(
                r"Full preset \(\d+ seeds, \d{4}-\d\d-\d\d\): ", row["decided"]
            )
            decided = row["decided"].split("): ", 1)[1]
            assert 5 <= len(decided.split()) <= MAX_WORDS, row


@pytest.mark.parametrize("which", PAGES)
def test_every_headline_is_a_number_with_its_interval(
    request: pytest.FixtureRequest, which: str
) -> None:
    """A number in bold and its interval, which holds the number; a quantity that
    cannot be negative has no negative end; only an exact computation, or a
    paired difference without spread, or a result saved without one says why it
    has none."""
    records, page = _page(request, which)
    by_name = {str(r["name"]): r for r in records}
    for row in _rows(page):
        found = re.search(r"^(.*): <strong>([^<]+)</strong>", row["headline"], re.S)
        assert found, row
        quantity, value = found[1], float(found[2])
        interval = re.search(rf'<span class="interval">\[({NUMBER})\*?, ({NUMBER})\*?\]</span>',
                             row["headline"])  # fmt: skip
        if interval is None:
            record = by_name[row["name"]]
            rows = get_experiment(row["name"]).numbers(record["result"])
            reason = (headline(row["name"], record["result"], rows) or {}).get("reason")
            said = (reason and f"({reason})" in row["headline"]) or (
                NO_SPREAD in row["headline"] and "paired" in quantity
            )
            assert said, row
            continue
        low, high = float(interval[1]), float(interval[2])
        assert low <= value <= high, row
        bottom, top = value_range(quantity)
        if bottom is not None:
            assert low >= bottom, row
        if top is not None:
            assert high <= top, row


def _section_rows(page: str) -> list[tuple[str, str, str, str]]:
    """Every (section, quantity, value, interval) of every section's Numbers table."""
    found = []
    for section in re.finditer(r'<section id="([^"]+)">(.*?)</section>', page, re.S):
        if section[1] == "summary":
            continue
        for table in re.findall(r"<table>(.*?)</table>", section[2], re.S):
            if "<th>95 % interval</th>" not in table:
                continue  # a module's own table, not the Numbers
            for cells in re.findall(
                r"<tr><td>(.*?)</td><td class=\"num\">(.*?)</td>"
                r"<td class=\"num\">(.*?)</td>",
                table,
            ):
                found.append((section[1], *(html.unescape(c) for c in cells)))
    return found


def interval_violations(page: str) -> list[str]:
    """Rows of the page's Numbers tables whose value is outside its own interval,
    or whose interval leaves the quantity's range."""
    bad = []
    for name, quantity, value, interval in _section_rows(page):
        found = INTERVAL.fullmatch(interval.strip())
        if not found:
            continue  # no interval, or "(no spread: no interval)"
        low, high, number = float(found[1]), float(found[2]), float(value)
        bottom, top = value_range(quantity)
        if not low <= number <= high:
            bad.append(f"{name}: {quantity} {value} {interval}: outside its interval")
        if (bottom is not None and low < bottom) or (top is not None and high > top):
            bad.append(f"{name}: {quantity} {interval}: leaves its range")
    return bad


def test_the_interval_check_catches_a_value_outside() -> None:
    """Guard against a check that passes everything: the issue's own rows."""
    row = (
        '<section id="expectation"><table><thead><tr><th>quantity</th><th>value</th>'
        "<th>95 % interval</th><th>unit</th></tr></thead><tbody>"
        '<tr><td>n = 8: mean relative error over all masks</td><td class="num">'
        '{}</td><td class="num">{}</td><td></td></tr></tbody></table></section>'
    )
    assert interval_violations(row.format("-0.008082", "[0*, 0.01023]"))
    assert interval_violations(row.format("1.442", "[1.308, 1*]"))
    assert not interval_violations(row.format("-0.008082", "[-0.02, 0.01023]"))


@pytest.mark.parametrize("which", PAGES)
def test_every_value_lies_inside_its_interval_in_every_section(
    request: pytest.FixtureRequest, which: str
) -> None:
    """Page-wide: each row of each section's Numbers, low <= value <= high, and an
    interval is cut only at its quantity's true range (a squared error has no
    upper bound, a signed error no bound at all)."""
    page = _page(request, which)[1]
    assert len(_section_rows(page)) >= 100  # the check saw the tables
    assert interval_violations(page) == []


def _resolution(text: str) -> float:
    """Half a unit of the last digit printed: ``"0.0378"`` -> 0.00005."""
    return 0.5 * 10.0 ** Decimal(text.lstrip("+")).as_tuple().exponent  # type: ignore[operator]


def _states(answer: str, value: str) -> bool:
    """Whether ``answer`` quotes the number ``value`` (same sign, same number to
    the digits either prints)."""
    target = float(value)
    for quoted in re.findall(rf"(?<![\w.^]){NUMBER}(?![\d.])", answer):
        if (float(quoted) < 0) != (target < 0) and target != 0:
            continue
        if abs(float(quoted) - target) <= _resolution(quoted) + _resolution(value):
            return True
    return False


def test_the_headline_check_catches_another_number() -> None:
    """The issue's own cases: another row's number, or the forest's opposite sign."""
    answer = "Nearly: weight scaling is 0.0378 (total variation) from the exact average"
    assert _states(answer, "0.03782") and not _states(answer, "0.1333")
    assert not _states("dropout vs no dropout: +0.9 points", "-0.92")
    assert _states("p^n = 7.89e-31", "7.889e-31")


@pytest.mark.parametrize("which", PAGES)
def test_each_headline_is_the_number_its_answer_states(
    request: pytest.FixtureRequest, which: str
) -> None:
    """For every row: the short answer quotes its headline's number, and where the
    headline compares dropout with no dropout, it is one of the forest plot's
    rows, with the forest plot's sign (dropout's benefit)."""
    records, page = _page(request, which)
    forest = forest_rows({str(r["name"]): r["result"] for r in records})
    for row in _rows(page):
        value = re.search(r"<strong>([^<]+)</strong>", row["headline"])
        assert value, row
        assert _states(row["answer"], value[1]), row
        if "dropout's benefit" in row["headline"]:
            drawn = [100 * f["mean"] for f in forest
                     if f["label"].startswith(row["name"] + ":")]  # fmt: skip
            assert any(
                abs(d - float(value[1])) <= _resolution(value[1]) for d in drawn
            ), (row, drawn)


@pytest.mark.parametrize("which", PAGES)
def test_every_answer_agrees_with_the_intervals_it_quotes(
    request: pytest.FixtureRequest, which: str
) -> None:
    records, _ = _page(request, which)
    for record in records:
        module = get_experiment(record["name"])
        rows = module.numbers(record["result"])
        for text in (module.answer(record["result"]),
                     short_answer(record["name"], record["result"], rows)):  # fmt: skip
            assert disagreements(text) == [], (record["name"], text)


@pytest.mark.parametrize("which", PAGES)
def test_helps_and_hurts_counts_follow_holm(
    request: pytest.FixtureRequest, which: str
) -> None:
    """The counts in when-it-helps' and data-size's short answers, recounted from
    the cells: detectable after Holm, on dropout's side or against it."""
    records, _ = _page(request, which)
    by_name = {str(r["name"]): r for r in records}
    cells = by_name["when-it-helps"]["result"]["cells"]
    helps = sum(detectable(c["benefit"], c["benefit"]["p_holm"]) and c["benefit"]["low"] > 0
                for c in cells)  # fmt: skip
    hurts = sum(detectable(c["benefit"], c["benefit"]["p_holm"]) and c["benefit"]["high"] < 0
                for c in cells)  # fmt: skip
    text = short_answer("when-it-helps", by_name["when-it-helps"]["result"], [])
    assert text.startswith(
        f"Helps detectably (Holm) in {helps}, hurts in {hurts} of {len(cells)} "
    )
    sizes = by_name["data-size"]["result"]["sizes"]
    lower = sum(detectable(s["difference"], s["difference"]["p_holm"])
                and s["difference"]["high"] < 0 for s in sizes)  # fmt: skip
    text = short_answer("data-size", by_name["data-size"]["result"], [])
    assert text.startswith(
        f"Dropout lowers test error detectably (Holm) at {lower} of {len(sizes)} sizes"
    )


def test_the_quick_uci_row_says_it_is_a_pipeline_check(
    quick: tuple[list[dict[str, Any]], str],
) -> None:
    row = next(r for r in _rows(quick[1]) if r["name"] == "uci")
    assert row["answer"].startswith("A pipeline check (400 epochs, not 4,000)")


@pytest.mark.parametrize("which", PAGES)
def test_headlines_of_paired_differences_speak_in_points_as_the_answers_do(
    request: pytest.FixtureRequest, which: str
) -> None:
    """A reader must not compare a headline of 0.056 with an answer's +5.6
    points: where the answer is in points, so is the headline, and an answer
    that quotes the headline's difference rounds the same number."""
    rows = {row["name"]: row for row in _rows(_page(request, which)[1])}
    checked = 0
    for name in HEADLINE_POINTS & rows.keys():
        row = rows[name]
        found = re.search(r"<strong>([^<]+)</strong> points", row["headline"])
        assert found, row
        value = float(found[1])
        quoted = [float(x) for x in re.findall(r"([+-]?\d+\.\d) points", row["answer"])]
        if any(abs(q) == round(abs(value), 1) for q in quoted):
            checked += 1
    assert checked >= 1  # at least one answer quotes its headline's difference


# Slips that generated English has made (the examples), each a pattern.
SLIPS = {
    r"\binputs has\b": "a plural subject with 'has'",
    r"(?:^|[;:.] )[\w-]+ show no\b": "one name with 'show'",
    r"\bby [+-]?\d[\d.]* of \w": "'by 0.03 of fraction' (a number with no unit)",
    r"(?i)\b(?:better|worse|than|and):? none\b|\bnone (?:minus|is|shows?)\b": (
        "'none' as a name"
    ),
}


def slips(text: str) -> list[str]:
    """The known slips of ``text``, by what they are."""
    return [what for pattern, what in SLIPS.items() if re.search(pattern, text)]


def test_the_grammar_check_catches_the_slips_it_knows() -> None:
    assert slips("On digits: mirrored inputs has a higher entropy than test inputs")
    assert slips("alpha is worse; gaussian show no difference from standard dropout")
    assert slips(
        "dropout is sparser than no dropout by 0.034 of fraction of activations"
    )
    assert slips("Better: none; worse: none, classic, alpha")
    assert not slips(
        "mirrored inputs have a higher entropy; classic, alpha show no difference; "
        "dropout is sparser than no dropout by 0.034 in the fraction of activations"
    )


@pytest.mark.parametrize("which", PAGES)
def test_generated_sentences_have_no_known_slips(
    request: pytest.FixtureRequest, which: str
) -> None:
    """Every answer, short or full, of the page (the shipped results included)."""
    page = _page(request, which)[1]
    texts = [html.unescape(re.sub(r"<[^>]+>", "", t)) for t in
             re.findall(r'<p class="answer">(.*?)</p>', page, re.S)]  # fmt: skip
    texts += [row["answer"] + " " + row["decided"] for row in _rows(page)]
    assert len(texts) >= 2 * len(_rows(page))
    for text in texts:
        assert slips(text) == [], text
