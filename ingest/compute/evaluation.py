"""How much of a model's behavioural truth each indicator finds: pure metric code, no SQL.

An indicator is a score per token (higher = more anomalous); the truth is a
boolean per token (behaviourally verified). Only *eligible* tokens are ranked
and counted: special tokens and placeholders (``<unusedN>`` and the like, the
indicators' reference rather than findings) and tokens without a verdict stay
out of every denominator.

At a candidate budget ``b`` (a share of the eligible tokens) an indicator's
top ``k = ceil(b * n)`` tokens are its candidates:

- precision = hits / k, recall = hits / n_truth, F1 their harmonic mean;
- R-precision: precision at ``k = n_truth``, the budget a perfect indicator
  needs (a fixed 2 % budget caps recall whenever more than 2 % fail);
- average precision: the mean of the precision at the rank of every true token.

Ties are broken by token id, so a figure never depends on sort stability.
A token without a score (NaN: an indicator measured on some tokens only, such
as ``elicitability``) is never a candidate, but a true one still counts in
recall and average precision, as a miss.
Figures from a sample rather than a whole sweep carry Wilson score intervals.

A stratified sample weights every token by the population tokens it stands
for (its stratum's population / sample size). Every count above becomes a sum
of weights: the budget takes the ranking's first tokens whose preceding weight
is below ``b * population``, precision and recall are ratios of weighted sums
and R-precision's budget is the estimated number of true tokens. Intervals
are Wilson intervals on Kish's effective sample size (:func:`effective_counts`).
With no weights every token weighs 1 and each figure is the plain count.

Shapes: ``n`` eligible tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

BUDGETS = (0.005, 0.01, 0.02, 0.05, 0.10)
R_PRECISION = "R"  # budget label of the row whose k is the number of true tokens
ANY_INDICATOR = "any_indicator"  # union of every indicator's candidates: what all of them together find
WILSON_Z = 1.959964  # two-sided 95 %


@dataclass(frozen=True)
class BudgetFigures:
    """One indicator at one budget."""

    budget: str  # '0.5%', ..., '10%' or 'R'
    k: int  # candidates in the sample
    n_hits: int  # true tokens among them
    precision: float | None
    recall: float | None
    f1: float | None
    # (successes, trials) behind precision and recall, for their intervals: the plain counts, or effective ones when weighted
    precision_counts: tuple[float, float]
    recall_counts: tuple[float, float]


@dataclass(frozen=True)
class IndicatorFigures:
    indicator: str
    average_precision: float | None
    budgets: tuple[BudgetFigures, ...]


def budget_label(budget: float) -> str:
    return f"{budget * 100:g}%"


def unit_weights(truth: Tensor, weights: Tensor | None) -> Tensor:
    """The tokens' weights as float64, 1 each when not given (a whole sweep or a uniform sample).  -> [n]."""
    return torch.ones(len(truth), dtype=torch.float64) if weights is None else weights.double()


def budget_size(weights_ranked: Tensor, target: float) -> int:
    """Candidates at a budget of ``target`` (population) tokens: the first tokens whose preceding weight is below it.

    With unit weights and ``target = b * n`` that is ``ceil(b * n)``: at least one, at most every eligible token.
    """
    before = weights_ranked.cumsum(0) - weights_ranked
    return int((before < target - 1e-9).sum())


def effective_counts(weights: Tensor, successes: Tensor) -> tuple[float, float]:
    """A weighted share as (successes, trials) on Kish's effective sample size ``(sum w)^2 / sum w^2``.

    Unit weights give the plain counts exactly. Unequal ones (a stratified sample) count fewer
    trials than tokens, so an interval on them widens by the weights' design effect. [m] float64, [m] bool.
    """
    total, squares = float(weights.sum()), float((weights * weights).sum())
    if not squares:
        return 0.0, 0.0
    scale = total / squares  # exactly 1 for unit weights, so the counts stay integers
    return float(weights[successes].sum()) * scale, total * scale


def _share(counts: tuple[float, float]) -> float | None:
    successes, trials = counts
    return successes / trials if trials else None


def ranking(scores: Tensor, token_ids: Tensor) -> Tensor:
    """Order of the tokens by descending score, ties by ascending token id; NaN scores last.  [n], [n] -> [n] indices."""
    by_id = torch.argsort(token_ids, stable=True)
    clean = torch.nan_to_num(scores[by_id].double(), nan=-math.inf)
    return by_id[torch.argsort(clean, descending=True, stable=True)]


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None or precision + recall == 0:
        return None if precision is None or recall is None else 0.0
    return 2 * precision * recall / (precision + recall)


def figures_of(label: str, candidates: Tensor, truth: Tensor, weights: Tensor) -> BudgetFigures:
    """Precision, recall and F1 of a candidate set, each token counted by its weight.  [n] bool, [n] bool, [n] float64."""
    precision_counts = effective_counts(weights[candidates], truth[candidates])
    recall_counts = effective_counts(weights[truth], candidates[truth])
    precision, recall = _share(precision_counts), _share(recall_counts)
    n_hits = int((candidates & truth).sum())
    return BudgetFigures(label, int(candidates.sum()), n_hits, precision, recall, _f1(precision, recall), precision_counts, recall_counts)


def average_precision(hits_ranked: Tensor, weights_ranked: Tensor | None = None, scored_ranked: Tensor | None = None) -> float | None:
    """Weighted mean over the true tokens of the (weighted) precision at their rank; an unscored true token adds 0.

    hits_ranked [n] bool, weights_ranked [n] (default 1), scored_ranked [n] bool (default all) -> float (None without true tokens).
    """
    if not hits_ranked.any():
        return None
    weights = unit_weights(hits_ranked, weights_ranked)
    found = hits_ranked if scored_ranked is None else hits_ranked & scored_ranked
    precision_at = (weights * hits_ranked).cumsum(0) / weights.cumsum(0)
    return float((precision_at[found] * weights[found]).sum() / weights[hits_ranked].sum())


def top_of_ranking(scored_ranked: Tensor, weights_ranked: Tensor, target: float) -> Tensor:
    """The candidates of a ranking at a budget of ``target`` (population) tokens, never an unscored one.  [n] bool, [n] -> [n] bool, ranked order."""
    return (torch.arange(len(scored_ranked)) < budget_size(weights_ranked, target)) & scored_ranked


def evaluate_indicator(
    name: str, scores: Tensor, truth: Tensor, token_ids: Tensor, budgets: Sequence[float] = BUDGETS, weights: Tensor | None = None
) -> IndicatorFigures:
    """Figures of one indicator over the eligible tokens.  scores [n] float, truth [n] bool, token_ids [n], weights [n] (default 1)."""
    order = ranking(scores, token_ids)
    hits_ranked, weights_ranked, scored_ranked = truth[order], unit_weights(truth, weights)[order], ~scores[order].isnan()
    targets = [(budget_label(b), b * float(weights_ranked.sum())) for b in budgets]
    targets.append((R_PRECISION, float(weights_ranked[hits_ranked].sum())))
    rows = [figures_of(label, top_of_ranking(scored_ranked, weights_ranked, target), hits_ranked, weights_ranked) for label, target in targets]
    return IndicatorFigures(name, average_precision(hits_ranked, weights_ranked, scored_ranked), tuple(rows))


def candidates_at(scores: Tensor, token_ids: Tensor, weights: Tensor, target: float) -> Tensor:
    """One indicator's candidates at a budget of ``target`` (population) tokens, as a mask.  [n], [n], [n] float64 -> [n] bool."""
    order = ranking(scores, token_ids)
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[order] = top_of_ranking(~scores[order].isnan(), weights[order], target)
    return mask


def union_figures(
    indicators: Mapping[str, Tensor], truth: Tensor, token_ids: Tensor, budgets: Sequence[float] = BUDGETS, weights: Tensor | None = None
) -> tuple[IndicatorFigures, dict[str, Tensor]]:
    """Figures of the union of every indicator's candidates at each budget, and the true tokens it misses.

    Returns the ``any_indicator`` figures (k = the union's size) and, per budget
    label, the token ids that are true but in no indicator's top k.
    """
    weights = unit_weights(truth, weights)
    rows, missed = [], {}
    for budget in budgets:
        union = torch.zeros(len(truth), dtype=torch.bool)
        for scores in indicators.values():
            union |= candidates_at(scores, token_ids, weights, budget * float(weights.sum()))
        label = budget_label(budget)
        rows.append(figures_of(label, union, truth, weights))
        missed[label] = token_ids[truth & ~union]
    return IndicatorFigures(ANY_INDICATOR, None, tuple(rows)), missed


def wilson_interval(successes: float, n: float, z: float = WILSON_Z) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None without trials): sound near 0 and 1, unlike the normal approximation.

    Effective (fractional) counts of a weighted sample are accepted as they are.
    """
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def estimated_count(truth: Tensor, weights: Tensor) -> tuple[float, tuple[float, float] | None]:
    """The population's estimated number of true tokens and its 95 % interval: the Wilson interval of their share, scaled.

    truth [n] bool, weights [n] float64 (population tokens per sampled token).
    """
    population = float(weights.sum())
    interval = wilson_interval(*effective_counts(weights, truth))
    return float(weights[truth].sum()), None if interval is None else (interval[0] * population, interval[1] * population)


@dataclass(frozen=True)
class Calibration:
    """Whether a model's behavioural truth separates glitch tokens from ordinary ones.

    ``floor``: share of control tokens (ordinary tokens sampled across the
    vocabulary) that the truth labels verified; ``top_rate``: the same share
    among the best indicator's top candidates. The truth separates when the
    lower Wilson bound of ``top_rate`` lies above the upper bound of ``floor``.
    Token counts are estimates of the population's in a stratified sample, and the
    top candidates' counts effective ones (:func:`effective_counts`).
    """

    n_controls: int
    n_controls_verified: int
    floor: float | None
    floor_interval: tuple[float, float] | None
    template_floors: dict[str, float]  # share of controls failing each template alone
    n_truth: float
    n_eligible: float
    excess: float | None  # verified tokens beyond what the floor predicts among the eligible ones
    best_indicator: str | None
    top_rate: float | None
    top_interval: tuple[float, float] | None
    separates: bool | None

    @property
    def statement(self) -> str:
        if self.floor is None:
            return "no control tokens were probed: the verified count cannot be calibrated"
        floor = f"{self.n_controls_verified} of {self.n_controls} ordinary control tokens ({self.floor:.1%}) are also verified"
        if self.separates:
            beyond = (
                f"{self.excess:.0f} verified tokens beyond that floor"
                if self.excess > 0
                else f"but the {self.n_truth:.0f} verified tokens are no more than the floor predicts ({self.floor * self.n_eligible:.0f})"
            )
            return f"the behavioural truth separates: {floor}, against {self.top_rate:.1%} of {self.best_indicator}'s top candidates; {beyond}"
        return (
            f"this model is too weak for its behavioural truth to separate glitch tokens from ordinary ones: {floor}, "
            f"and {self.best_indicator}'s top candidates fail at {self.top_rate:.1%}, within the floor's interval"
        )


def calibrate(
    control_verified: Sequence[bool],
    control_template_failed: Mapping[str, Sequence[bool]],
    n_truth: float,
    n_eligible: float,
    best_indicator: str | None,
    top_hits: float,
    top_k: float,
) -> Calibration:
    """Calibration figures from the controls' verdicts and per-template failures and the best indicator's top candidates."""
    n_controls, n_verified = len(control_verified), sum(control_verified)
    floor = n_verified / n_controls if n_controls else None
    floor_interval = wilson_interval(n_verified, n_controls)
    top_interval = wilson_interval(top_hits, top_k)
    separates = None
    if floor_interval is not None and top_interval is not None:
        separates = top_interval[0] > floor_interval[1]
    return Calibration(
        n_controls=n_controls,
        n_controls_verified=n_verified,
        floor=floor,
        floor_interval=floor_interval,
        template_floors={name: sum(failed) / len(failed) for name, failed in control_template_failed.items() if failed},
        n_truth=n_truth,
        n_eligible=n_eligible,
        excess=None if floor is None else n_truth - floor * n_eligible,
        best_indicator=best_indicator,
        top_rate=top_hits / top_k if top_k else None,
        top_interval=top_interval,
        separates=separates,
    )


# --- learned combination (leave-one-model-out) --------------------------------------------

LEARNED = "learned"
CATEGORY_PREFIX = "category:"


def percentile_ranks(values: Tensor) -> Tensor:
    """Each value's mid-rank share among the model's tokens, so one model's scale transfers to another's.

    NaN (no value for that token) becomes 0.5, the uninformative middle. [n] -> [n] float64 in [0, 1].
    """
    values = values.double()
    known = ~values.isnan()
    ranks = torch.full_like(values, 0.5)
    if known.sum() > 1:
        present = values[known]
        below = torch.searchsorted(present.sort().values, present, right=False).double()
        not_above = torch.searchsorted(present.sort().values, present, right=True).double()
        ranks[known] = (below + not_above - 1) / 2 / (len(present) - 1)
    return ranks


def shared_features(models: Sequence[Mapping[str, Tensor]]) -> list[str]:
    """Indicators every model has, plus every tokenizer category any model has (a model without one is all zeros)."""
    numeric = set.intersection(*({n for n in m if not n.startswith(CATEGORY_PREFIX)} for m in models)) - {LEARNED}
    categories = set().union(*({n for n in m if n.startswith(CATEGORY_PREFIX)} for m in models))
    return sorted(numeric) + sorted(categories)


def feature_matrix(scores: Mapping[str, Tensor], features: Sequence[str], n: int) -> Tensor:
    """Percentile ranks of the numeric indicators and 0/1 categories, one column per feature.  -> [n, features]."""
    columns = []
    for name in features:
        if name.startswith(CATEGORY_PREFIX):
            columns.append(scores[name].double() if name in scores else torch.zeros(n, dtype=torch.float64))
        else:
            columns.append(percentile_ranks(scores[name]))
    return torch.stack(columns, dim=1)


def learned_scores(
    training: Sequence[tuple[Mapping[str, Tensor], Tensor]], held_out: Mapping[str, Tensor], n: int, seed: int = 0
) -> tuple[Tensor, list[str]]:
    """Score the held-out model's tokens by a logistic regression fitted on other models' indicators and truth.

    ``training``: per other model, its indicator scores (name -> [m]) and truth [m] bool; ``held_out``:
    this model's scores (name -> [n]). Features are percentile ranks within each model, so no model's
    units leak into another's; classes are balanced (verified tokens are a few percent). Returns the
    scores [n] (probability of verified) and the features used.
    """
    from sklearn.linear_model import (
        LogisticRegression,  # scikit-learn is heavy to import; only evaluation needs it
    )

    features = shared_features([scores for scores, _ in training] + [held_out])
    x = torch.cat([feature_matrix(scores, features, len(truth)) for scores, truth in training]).numpy()
    y = torch.cat([truth for _, truth in training]).numpy()
    if y.all() or not y.any():
        raise ValueError("the training models' truth has a single class")
    model = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed).fit(x, y)
    probabilities = model.predict_proba(feature_matrix(held_out, features, n).numpy())[:, 1]
    return torch.from_numpy(probabilities), features
