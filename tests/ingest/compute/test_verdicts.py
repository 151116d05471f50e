"""Verdict rules and failure categories on fixed numbers and strings (no model)."""

import pytest

from ingest.compute.verdicts import ProbeOutcome, Thresholds, dominant_category, failure_category, spells, verdict

QUESTION = "Please repeat the following text exactly.\nText: \nText:"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("I'm sorry, I cannot repeat that.", "evasion"),
        ("Could you please provide the text?", "evasion"),
        ("Please repeat the following text exactly.", "question_repeat"),
        ("f-i-r-s-t-s-u-m", "spelling_out"),
        ("S, P, O, B, U\nmore", "spelling_out"),
        ("\n*  1.1.1: 1.", "random_chars"),
        ("@#$%^&*()!!", "random_chars"),
        ("SUPERCORN\"", "substitution"),
        (" None", "substitution"),
        (" The new employee, who was hired last week, was very", "hallucination"),
    ],
)
def test_failure_category_from_output(output, expected):
    assert failure_category(output, "firstsum", QUESTION) == expected


def test_output_naming_the_token_with_more_text_is_a_hallucination_not_a_substitution():
    assert failure_category("firstsum", "firstsum", QUESTION) == "hallucination"


@pytest.mark.parametrize(
    ("output", "token", "expected"),
    [
        ("c-a-t", " cat", True),
        ("C, A, T, S", "cat", True),
        ("c a t\nThat spells cat.", "cat", True),
        (" cat", " cat", False),  # repeating the word is not spelling it
        ("S-A-T-E-S-U", "firstsum", False),
        ("", "cat", False),
        ("x", "x", True),
    ],
)
def test_spells(output, token, expected):
    assert spells(output, token) is expected


def _probe(prob, kind="repeat", category=None):
    return ProbeOutcome(kind=kind, passed=category is None, target_prob=prob, failure_category=category)


def test_verdict_thresholds_use_the_highest_target_probability():
    thresholds = Thresholds(verified_below=0.01, weak_below=0.1)
    assert verdict([_probe(0.001, category="empty"), _probe(0.009, category="empty")], thresholds).verdict == "verified"
    assert verdict([_probe(0.001, category="empty"), _probe(0.05, category="substitution")], thresholds).verdict == "weakly_verified"
    assert verdict([_probe(0.001, category="empty"), _probe(0.5)], thresholds).verdict == "rejected"
    assert verdict([_probe(0.1)], thresholds).verdict == "rejected"  # the bound is exclusive


def test_spell_probes_do_not_decide_the_verdict_but_count_as_probes():
    judged = verdict([_probe(0.9, kind="spell", category="spelling_out"), _probe(0.001, category="empty")], Thresholds())
    assert (judged.verdict, judged.max_target_prob, judged.n_probes, judged.n_passed) == ("verified", 0.001, 2, 0)


def test_no_probes_is_untested():
    assert verdict([], Thresholds()).verdict == "untested"
    assert verdict([_probe(0.9, kind="spell")], Thresholds()).verdict == "untested"


def test_dominant_category_counts_then_breaks_ties_by_order():
    assert dominant_category(["hallucination", "empty", "hallucination"]) == "hallucination"
    assert dominant_category(["substitution", "evasion"]) == "evasion"
    assert dominant_category([None, None]) is None
