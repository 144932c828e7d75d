"""Answer normalisation, exact match and token F1 against hand-computed values."""

from __future__ import annotations

import pytest
from fathom.reward.answers import exact_match, normalize_answer, token_f1


@pytest.mark.parametrize(("text", "expected"), [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   apple,  a pear ", "apple pear"),
    ("Lacedelli & Compagnoni", "lacedelli compagnoni"),
    ("“Lacedelli” — Compagnoni", "lacedelli compagnoni"),  # Unicode quotes and dash
    ("the-end", "theend"),  # SQuAD order: punctuation first, then articles
    ("Theory of Everything", "theory of everything"),  # "the" inside a word stays
    ("2,850 km", "2850 km"),
    ("", ""),
])
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_is_the_best_over_golds() -> None:
    assert exact_match("the Danube", ["Rhine", "Danube"]) == 1.0
    assert exact_match("Danube river", ["Danube"]) == 0.0
    assert exact_match("anything", []) == 0.0


def test_token_f1_by_hand() -> None:
    # pred {lino, lacedelli}, gold {lino, lacedelli, and, achille, compagnoni}: P = 2/2, R = 2/5
    f1 = token_f1("Lino Lacedelli", ["Lino Lacedelli and Achille Compagnoni"])
    assert f1 == pytest.approx(2 * 1 * 0.4 / 1.4)
    # a repeated token counts as often as both sides have it: pred "x x y", gold "x y y",
    # common = {x: 1, y: 1} -> P = 2/3, R = 2/3, F1 = 2/3
    assert token_f1("x x y", ["x y y"]) == pytest.approx(2 / 3)
    assert token_f1("Paris", ["London", "paris."]) == 1.0
    assert token_f1("Paris", ["London"]) == 0.0


def test_token_f1_empty_answers() -> None:
    assert token_f1("The", ["a"]) == 1.0  # both normalise to nothing: SQuAD v2 counts agreement
    assert token_f1("", ["Paris"]) == 0.0
    assert token_f1("Paris", [""]) == 0.0
    assert token_f1("Paris", []) == 0.0
