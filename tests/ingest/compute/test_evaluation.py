"""Detection-quality metrics on hand-built rankings whose answers are worked out by hand."""

import math

import pytest
import torch

from ingest.compute.evaluation import (
    ANY_INDICATOR,
    LEARNED,
    R_PRECISION,
    average_precision,
    budget_size,
    calibrate,
    candidates_at,
    effective_counts,
    estimated_count,
    evaluate_indicator,
    learned_scores,
    percentile_ranks,
    ranking,
    shared_features,
    union_figures,
    wilson_interval,
)

# Ten eligible tokens; ids 10..19. Truth: ids 10, 12 and 19.
TOKEN_IDS = torch.arange(10, 20)
TRUTH = torch.tensor([True, False, True, False, False, False, False, False, False, True])
# Ranking by score: 10, 11, 12, 13, ..., 19 (descending scores): hits at ranks 1, 3 and 10.
SCORES = torch.arange(10, 0, -1, dtype=torch.float32)


def test_ranking_breaks_ties_by_token_id_and_puts_nan_last():
    scores = torch.tensor([1.0, float("nan"), 1.0, 2.0])
    ids = torch.tensor([7, 3, 5, 9])
    assert ids[ranking(scores, ids)].tolist() == [9, 5, 7, 3]


def test_average_precision_by_hand():
    hits = TRUTH[ranking(SCORES, TOKEN_IDS)]
    # precision at the hits' ranks: 1/1, 2/3, 3/10
    assert average_precision(hits) == pytest.approx((1 + 2 / 3 + 3 / 10) / 3)
    assert average_precision(torch.zeros(4, dtype=torch.bool)) is None


def test_budgets_and_r_precision_by_hand():
    figures = evaluate_indicator("score", SCORES, TRUTH, TOKEN_IDS, budgets=(0.1, 0.2, 0.5))
    rows = {row.budget: row for row in figures.budgets}
    assert [rows[b].k for b in ("10%", "20%", "50%", R_PRECISION)] == [1, 2, 5, 3]
    assert (rows["10%"].precision, rows["10%"].recall) == (1.0, pytest.approx(1 / 3))
    assert rows["20%"].n_hits == 1 and rows["20%"].precision == 0.5
    assert rows["50%"].n_hits == 2 and rows["50%"].f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    # R-precision: the top 3 hold ids 10 and 12
    assert rows[R_PRECISION].precision == pytest.approx(2 / 3) == rows[R_PRECISION].recall


def test_a_perfect_and_a_reversed_indicator():
    perfect = evaluate_indicator("truth", TRUTH.float(), TRUTH, TOKEN_IDS)
    assert perfect.average_precision == 1.0
    assert next(r for r in perfect.budgets if r.budget == R_PRECISION).precision == 1.0
    reversed_ = evaluate_indicator("anti", -TRUTH.float(), TRUTH, TOKEN_IDS)
    assert next(r for r in reversed_.budgets if r.budget == R_PRECISION).precision == 0.0


def test_an_unscored_token_is_never_a_candidate_but_a_missed_true_one_counts():
    """An indicator measured on three tokens only (ids 10, 11, 19): the rest are NaN."""
    scores = torch.full((10,), float("nan"))
    scores[[0, 1, 9]] = torch.tensor([3.0, 2.0, 1.0])
    figures = evaluate_indicator("partial", scores, TRUTH, TOKEN_IDS, budgets=(0.5,))
    rows = {row.budget: row for row in figures.budgets}
    # 50 % is 5 tokens, but only the 3 scored can be candidates: 10 and 19 are hits, 12 (unscored) is missed
    assert (rows["50%"].k, rows["50%"].n_hits, rows["50%"].recall) == (3, 2, pytest.approx(2 / 3))
    assert (rows[R_PRECISION].k, rows[R_PRECISION].n_hits) == (3, 2)
    # precision at the found hits' ranks 1/1 and 2/3; the unscored true token adds 0 over 3 true tokens
    assert figures.average_precision == pytest.approx((1 + 2 / 3) / 3)
    weights = torch.ones(10, dtype=torch.float64)
    assert TOKEN_IDS[candidates_at(scores, TOKEN_IDS, weights, 8.0)].tolist() == [10, 11, 19]
    union, missed = union_figures({"partial": scores}, TRUTH, TOKEN_IDS, budgets=(1.0,))
    assert missed["100%"].tolist() == [12] and union.budgets[0].k == 3


def test_budget_size_is_at_least_one_and_rounds_up():
    def unweighted(budget: float, n: int) -> int:
        return budget_size(torch.ones(n, dtype=torch.float64), budget * n)

    assert unweighted(0.005, 49152) == 246
    assert unweighted(0.02, 10) == 1
    assert unweighted(0.10, 10) == 1
    assert unweighted(0.5, 3) == 2


# The same ten tokens as a stratified sample: ids 10..13 are a whole stratum of 4 (weight 1), ids 14..19 a sample
# of 6 from a stratum of 60 (weight 10). Population 64; estimated true tokens 1 + 1 + 10 = 12 (the naive count is 3).
WEIGHTS = torch.tensor([1.0] * 4 + [10.0] * 6, dtype=torch.float64)


def test_a_stratified_sample_weights_every_figure_by_hand():
    figures = evaluate_indicator("score", SCORES, TRUTH, TOKEN_IDS, budgets=(0.1, 0.5), weights=WEIGHTS)
    rows = {row.budget: row for row in figures.budgets}
    # 10 % of 64 = 6.4 population tokens: the ranking's weights before each token are 0, 1, 2, 3, 4, 14, ...,
    # so ids 10..14 are the candidates (weight 14), holding ids 10 and 12 (weight 2). Unweighted: k = 1, precision 1.
    assert (rows["10%"].k, rows["10%"].n_hits) == (5, 2)
    assert rows["10%"].precision == pytest.approx(2 / 14) and rows["10%"].recall == pytest.approx(2 / 12)
    # 50 % = 32: before-weights 0, 1, 2, 3, 4, 14, 24 are below it, 34 is not: ids 10..16, weight 34.
    assert rows["50%"].k == 7 and rows["50%"].precision == pytest.approx(2 / 34)
    # R-precision: a budget of the estimated 12 true tokens takes ids 10..14 again (before-weight 4 < 12 < 14).
    assert rows[R_PRECISION].k == 5 and rows[R_PRECISION].precision == pytest.approx(2 / 14)
    # Average precision: true tokens at ranks 1, 3, 10 (weights 1, 1, 10), weighted precision there 1, 2/3, 12/64.
    assert figures.average_precision == pytest.approx((1 + 2 / 3 + 10 * 12 / 64) / 12)
    # Effective counts of precision at 10 %: weights 1, 1, 1, 1, 10 -> scale 14 / 104.
    assert rows["10%"].precision_counts == (pytest.approx(2 * 14 / 104), pytest.approx(14 * 14 / 104))


def test_unit_weights_give_the_plain_counts():
    assert effective_counts(torch.ones(5, dtype=torch.float64), torch.tensor([True, False, True, True, False])) == (3.0, 5.0)
    plain = evaluate_indicator("score", SCORES, TRUTH, TOKEN_IDS, budgets=(0.2,))
    weighted = evaluate_indicator("score", SCORES, TRUTH, TOKEN_IDS, budgets=(0.2,), weights=torch.ones(10))
    assert plain == weighted and plain.budgets[0].precision_counts == (1.0, 2.0) and plain.budgets[0].recall_counts == (1.0, 3.0)


def test_estimated_count_of_a_stratified_sample():
    estimate, (low, high) = estimated_count(TRUTH, WEIGHTS)
    assert estimate == 12.0
    # Share 12/64 on 64^2 / (4 + 600) effective tokens; the interval is that share's Wilson interval x 64.
    share_low, share_high = wilson_interval(12 * 64 / 604, 64 * 64 / 604)
    assert (low, high) == (pytest.approx(share_low * 64), pytest.approx(share_high * 64)) and low < 12 < high


def test_union_finds_what_either_indicator_finds_and_lists_the_missed():
    first = torch.tensor([9, 8, 0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float32)  # top 2: ids 10, 11
    second = torch.tensor([0, 0, 9, 8, 0, 0, 0, 0, 0, 0], dtype=torch.float32)  # top 2: ids 12, 13
    union, missed = union_figures({"a": first, "b": second}, TRUTH, TOKEN_IDS, budgets=(0.2,))
    (row,) = union.budgets
    assert union.indicator == ANY_INDICATOR
    assert (row.k, row.n_hits, row.precision) == (4, 2, 0.5)
    assert missed["20%"].tolist() == [19]
    # Weighted (WEIGHTS): 20 % of 64 = 12.8 takes each indicator's top 5 (before-weight 4 < 12.8 < 14); ties go by
    # token id, so both tops are ids 10..14 (weight 14, 2 true): unweighted the union had 4 tokens and precision 1/2.
    weighted, missed = union_figures({"a": first, "b": second}, TRUTH, TOKEN_IDS, budgets=(0.2,), weights=WEIGHTS)
    (row,) = weighted.budgets
    assert (row.k, row.n_hits) == (5, 2) and row.precision == pytest.approx(2 / 14) and missed["20%"].tolist() == [19]


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 80)
    # Reference values of the Wilson score interval for 5/80 at 95 %.
    assert (low, high) == (pytest.approx(0.0270, abs=5e-4), pytest.approx(0.1383, abs=5e-4))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) is None


def test_calibration_says_plainly_when_the_truth_does_not_separate():
    weak = calibrate([True] * 13 + [False] * 67, {"echo": [True] * 20 + [False] * 60}, 8000, 49000, "unused_cos", 5, 80)
    assert weak.separates is False and "too weak" in weak.statement
    assert weak.template_floors == {"echo": 0.25}
    assert weak.excess == pytest.approx(8000 - 13 / 80 * 49000)
    strong = calibrate([True] + [False] * 79, {}, 2000, 49000, "unused_cos", 70, 80)
    assert strong.separates is True and "separates" in strong.statement and "1388 verified tokens beyond" in strong.statement
    ranks_but_few = calibrate([True] * 4 + [False] * 96, {}, 28, 967, "unused_cos", 13, 20)
    assert ranks_but_few.separates is True and "no more than the floor predicts (39)" in ranks_but_few.statement
    assert calibrate([], {}, 10, 100, None, 0, 0).separates is None
    assert not math.isnan(strong.floor)


# --- learned combination ----------------------------------------------------------------


def test_percentile_ranks_share_ties_and_put_nan_in_the_middle():
    ranks = percentile_ranks(torch.tensor([3.0, 1.0, float("nan"), 2.0, 2.0]))
    assert ranks.tolist() == [1.0, 0.0, 0.5, 0.5, 0.5]


def test_shared_features_keep_common_indicators_and_every_category():
    a = {"anomaly_score": torch.zeros(2), "first_forward": torch.zeros(2), "category:byte": torch.zeros(2), LEARNED: torch.zeros(2)}
    b = {"anomaly_score": torch.zeros(3), "category:partial_utf8": torch.zeros(3)}
    assert shared_features([a, b]) == ["anomaly_score", "category:byte", "category:partial_utf8"]


def _model(n: int, scale: float, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Truth follows `signal` (in this model's own units) and `byte`; `noise` is unrelated."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.rand(n, generator=g) * scale
    byte = (torch.rand(n, generator=g) < 0.05).float()
    truth = (signal > 0.9 * scale) | (byte > 0)
    return {"signal": signal, "noise": torch.rand(n, generator=g), "category:byte": byte}, truth


def test_a_combination_learned_on_one_model_ranks_another_models_truth_first_whatever_its_units():
    train = _model(2000, scale=1.0, seed=0)
    held_out, truth = _model(500, scale=1000.0, seed=1)  # another model's units: percentiles make them comparable
    scores, features = learned_scores([train], held_out, len(truth))
    assert features == ["noise", "signal", "category:byte"]
    assert scores.shape == (500,) and bool(((scores >= 0) & (scores <= 1)).all())
    figures = evaluate_indicator(LEARNED, scores, truth, torch.arange(500))
    single = evaluate_indicator("signal", held_out["signal"], truth, torch.arange(500))
    r_precision = {f.indicator: next(r.precision for r in f.budgets if r.budget == "R") for f in (figures, single)}
    assert r_precision[LEARNED] > 0.95 > r_precision["signal"]  # it learned that bytes fail too


def test_learning_from_a_single_class_is_refused():
    scores, truth = _model(100, 1.0, 0)
    with pytest.raises(ValueError, match="single class"):
        learned_scores([(scores, torch.zeros(100, dtype=torch.bool))], scores, 100)
