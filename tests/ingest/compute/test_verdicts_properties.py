"""Property tests of the verdict rules: total on any text, consistent with the thresholds, monotone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.compute.verdicts import (
    FAILURE_CATEGORIES,
    TARGET_KINDS,
    VERDICTS,
    ProbeOutcome,
    Thresholds,
    dominant_category,
    failure_category,
    precision,
    spells,
    verdict,
)

KINDS = sorted(TARGET_KINDS | {"spell"})
# Order of severity: a higher target probability may only move a token towards 'rejected'.
SEVERITY = {"verified": 0, "weakly_verified": 1, "rejected": 2}

probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
categories = st.one_of(st.none(), st.sampled_from(FAILURE_CATEGORIES))
outcomes = st.builds(ProbeOutcome, kind=st.sampled_from(KINDS), passed=st.booleans(), target_prob=probabilities, failure_category=categories)
thresholds = st.tuples(probabilities, probabilities).map(lambda pair: Thresholds(verified_below=min(pair), weak_below=max(pair)))
# Any unicode, plus the characters the rules look at (spaces, separators, quotes, letters).
texts = st.one_of(st.text(), st.text(alphabet=st.sampled_from(list("aAéß1 -,.\n\"'“:?ſ\u00a0\u2028ﬁ"))))


@given(st.lists(outcomes), thresholds)
def test_verdict_is_one_of_the_labels_and_counts_every_probe(probes, limits):
    judged = verdict(probes, limits)
    assert judged.verdict in VERDICTS
    assert judged.n_probes == len(probes) and judged.n_passed == sum(p.passed for p in probes)
    assert judged.failure_category in (*FAILURE_CATEGORIES, None)


@given(st.lists(outcomes, min_size=1), thresholds)
def test_verdict_follows_the_thresholds_on_the_highest_target_probability(probes, limits):
    target = [p.target_prob for p in probes if p.kind in TARGET_KINDS]
    judged = verdict(probes, limits)
    if not target:
        assert (judged.verdict, judged.max_target_prob) == ("untested", None)
        return
    assert judged.max_target_prob == max(target)
    expected = "verified" if max(target) < limits.verified_below else "weakly_verified" if max(target) < limits.weak_below else "rejected"
    assert judged.verdict == expected


@given(st.lists(outcomes, min_size=1), thresholds, st.integers(min_value=0), probabilities)
def test_raising_a_target_probability_never_makes_a_token_look_more_broken(probes, limits, index, raised):
    probe = probes[index % len(probes)]
    higher = ProbeOutcome(probe.kind, probe.passed, max(probe.target_prob, raised), probe.failure_category)
    before = verdict(probes, limits).verdict
    after = verdict([higher if p is probe else p for p in probes], limits).verdict
    if before != "untested":
        assert SEVERITY[after] >= SEVERITY[before]


@settings(max_examples=300)
@given(texts, texts, texts)
def test_failure_category_is_total(output, token_text, question):
    assert failure_category(output, token_text, question) in FAILURE_CATEGORIES


@given(st.text(alphabet=" \t\n\r\u00a0\u2028\u3000"))
def test_blank_output_is_empty(output):
    assert failure_category(output, "firstsum", "Repeat it.") == "empty"


@given(st.lists(categories))
def test_dominant_category_is_one_of_its_inputs(values):
    dominant = dominant_category(values)
    present = [v for v in values if v is not None]
    assert (dominant is None) == (not present)
    if present:
        assert dominant in present and present.count(dominant) == max(present.count(c) for c in present)


@settings(max_examples=300)
@given(texts, texts)
def test_spells_is_total(output, token_text):
    assert spells(output, token_text) in (True, False)


@given(texts, st.text(alphabet=" -,.!?\n\"'“:()"))
def test_a_token_without_letters_or_digits_is_never_spelled(output, token_text):
    assert not spells(output, token_text)


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10_000))
def test_precision_is_a_share_or_none(tested, hits):
    hits = min(hits, tested)
    share = precision(tested, hits)
    assert share is None if tested == 0 else 0.0 <= share <= 1.0


# NaN: what a float16 forward that overflowed reports as the target's probability.
any_probability = st.one_of(probabilities, st.just(float("nan")))
any_outcomes = st.builds(ProbeOutcome, kind=st.sampled_from(KINDS), passed=st.booleans(), target_prob=any_probability, failure_category=categories)


@given(st.lists(any_outcomes), thresholds, st.randoms())
def test_verdict_does_not_depend_on_the_order_of_the_probes(probes, limits, rng):
    shuffled = list(probes)
    rng.shuffle(shuffled)
    assert verdict(shuffled, limits) == verdict(probes, limits)


@given(st.lists(outcomes), thresholds)
def test_probes_that_measured_nothing_do_not_change_the_verdict(probes, limits):
    nan_probe = ProbeOutcome("repeat", False, float("nan"), "empty")
    with_nan = verdict([nan_probe, *probes], limits)
    assert (with_nan.verdict, with_nan.max_target_prob) == (verdict(probes, limits).verdict, verdict(probes, limits).max_target_prob)
