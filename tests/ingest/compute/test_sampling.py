"""The stratified sample's bands, allocation and draw, on hand-built vocabularies with hand-worked answers."""

import pytest

from ingest.compute.sampling import allocate, band_of, stratified_sample, stratum_weights


def test_allocate_caps_a_group_at_its_size_and_resplits_the_rest():
    # Quotas 10 each; the second group holds 5, the other two share 25: 12.5 each, the odd token to the first.
    assert allocate([100, 5, 50], [1, 1, 1], 30) == [13, 5, 12]
    assert allocate([3, 4], [1, 1], 100) == [3, 4]


def test_allocate_floors_every_group_even_past_the_total():
    # Floors 2, 2, 1 (a group of 1 taken whole), then 5 left by size: 4.985 and 0.015 -> 4 + the remainder, 0.
    assert allocate([1000, 3, 1], [1000, 3, 1], 10, floor=2) == [7, 2, 1]
    assert allocate([5, 5, 5], [1, 1, 1], 4, floor=2) == [2, 2, 2]


def test_bands_split_the_ranking_at_2_and_10_percent():
    bands = band_of(list(range(100)))
    assert [bands[t] for t in (0, 1, 2, 9, 10, 99)] == ["top2%", "top2%", "2-10%", "2-10%", "rest", "rest"]


def test_a_stratified_sample_over_samples_the_top_and_records_its_strata():
    categories = {t: "byte" if t < 50 else "normal" for t in range(1000)}
    ranked = list(range(999, -1, -1))  # the highest ids are the most anomalous
    strata = stratified_sample(categories, ranked, 100, seed=0)
    # Bands of 20, 80 and 900 tokens get 30 %, 30 %, 40 % of 100; the top holds only 20, so the other two share 80 by
    # 0.3 : 0.4 (34.3, 45.7 -> 34, 46). The rest band: floors 2 + 2, then 42 by size (2.33, 39.67 -> 2, 40).
    sizes = [(s.band, s.category, s.population, len(s.token_ids)) for s in strata]
    assert sizes == [("top2%", "normal", 20, 20), ("2-10%", "normal", 80, 34), ("rest", "byte", 50, 4), ("rest", "normal", 850, 42)]
    assert all(t < 50 for t in strata[2].token_ids) and set(strata[1].token_ids) <= set(range(900, 980))
    assert stratified_sample(categories, ranked, 100, seed=0) == strata
    assert stratified_sample(categories, ranked, 100, seed=1) != strata
    weights = stratum_weights([s.as_params() for s in strata])
    assert len(weights) == 100 and sum(weights.values()) == pytest.approx(1000)
    assert weights[strata[2].token_ids[0]] == 12.5
