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
Figures from a sample rather than a whole sweep carry Wilson score intervals.

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
    k: int
    n_hits: int
    precision: float | None
    recall: float | None
    f1: float | None


@dataclass(frozen=True)
class IndicatorFigures:
    indicator: str
    average_precision: float | None
    budgets: tuple[BudgetFigures, ...]


def budget_label(budget: float) -> str:
    return f"{budget * 100:g}%"


def budget_size(budget: float, n: int) -> int:
    """Candidates at a budget: at least one, at most every eligible token."""
    return min(n, max(1, math.ceil(budget * n - 1e-9)))


def ranking(scores: Tensor, token_ids: Tensor) -> Tensor:
    """Order of the tokens by descending score, ties by ascending token id; NaN scores last.  [n], [n] -> [n] indices."""
    by_id = torch.argsort(token_ids, stable=True)
    clean = torch.nan_to_num(scores[by_id].double(), nan=-math.inf)
    return by_id[torch.argsort(clean, descending=True, stable=True)]


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None or precision + recall == 0:
        return None if precision is None or recall is None else 0.0
    return 2 * precision * recall / (precision + recall)


def figures_at(hits_ranked: Tensor, k: int, label: str, n_truth: int) -> BudgetFigures:
    """Precision, recall and F1 of the first ``k`` of a ranking.  hits_ranked [n] bool (truth in ranked order)."""
    n_hits = int(hits_ranked[:k].sum()) if k else 0
    precision = n_hits / k if k else None
    recall = n_hits / n_truth if n_truth else None
    return BudgetFigures(label, k, n_hits, precision, recall, _f1(precision, recall))


def average_precision(hits_ranked: Tensor) -> float | None:
    """Mean over the true tokens of the precision at their rank.  [n] bool -> float (None without true tokens)."""
    n_truth = int(hits_ranked.sum())
    if not n_truth:
        return None
    ranks = torch.arange(1, len(hits_ranked) + 1, dtype=torch.float64)
    precision_at = hits_ranked.double().cumsum(0) / ranks
    return float(precision_at[hits_ranked].sum() / n_truth)


def evaluate_indicator(
    name: str, scores: Tensor, truth: Tensor, token_ids: Tensor, budgets: Sequence[float] = BUDGETS
) -> IndicatorFigures:
    """Figures of one indicator over the eligible tokens.  scores [n] float, truth [n] bool, token_ids [n]."""
    hits_ranked = truth[ranking(scores, token_ids)]
    n, n_truth = len(truth), int(truth.sum())
    rows = [figures_at(hits_ranked, budget_size(b, n), budget_label(b), n_truth) for b in budgets]
    rows.append(figures_at(hits_ranked, n_truth, R_PRECISION, n_truth))
    return IndicatorFigures(name, average_precision(hits_ranked), tuple(rows))


def candidates_at(scores: Tensor, token_ids: Tensor, k: int) -> Tensor:
    """The top ``k`` of one indicator as a mask over the eligible tokens.  [n], [n] -> [n] bool."""
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[ranking(scores, token_ids)[:k]] = True
    return mask


def union_figures(
    indicators: Mapping[str, Tensor], truth: Tensor, token_ids: Tensor, budgets: Sequence[float] = BUDGETS
) -> tuple[IndicatorFigures, dict[str, Tensor]]:
    """Figures of the union of every indicator's candidates at each budget, and the true tokens it misses.

    Returns the ``any_indicator`` figures (k = the union's size) and, per budget
    label, the token ids that are true but in no indicator's top k.
    """
    n, n_truth = len(truth), int(truth.sum())
    rows, missed = [], {}
    for budget in budgets:
        k = budget_size(budget, n)
        union = torch.zeros(n, dtype=torch.bool)
        for scores in indicators.values():
            union |= candidates_at(scores, token_ids, k)
        label = budget_label(budget)
        n_hits = int((union & truth).sum())
        size = int(union.sum())
        precision = n_hits / size if size else None
        recall = n_hits / n_truth if n_truth else None
        rows.append(BudgetFigures(label, size, n_hits, precision, recall, _f1(precision, recall)))
        missed[label] = token_ids[truth & ~union]
    return IndicatorFigures(ANY_INDICATOR, None, tuple(rows)), missed


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None without trials): sound near 0 and 1, unlike the normal approximation."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Calibration:
    """Whether a model's behavioural truth separates glitch tokens from ordinary ones.

    ``floor``: share of control tokens (ordinary tokens sampled across the
    vocabulary) that the truth labels verified; ``top_rate``: the same share
    among the best indicator's top candidates. The truth separates when the
    lower Wilson bound of ``top_rate`` lies above the upper bound of ``floor``.
    """

    n_controls: int
    n_controls_verified: int
    floor: float | None
    floor_interval: tuple[float, float] | None
    template_floors: dict[str, float]  # share of controls failing each template alone
    n_truth: int
    n_eligible: int
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
                else f"but the {self.n_truth} verified tokens are no more than the floor predicts ({self.floor * self.n_eligible:.0f})"
            )
            return f"the behavioural truth separates: {floor}, against {self.top_rate:.1%} of {self.best_indicator}'s top candidates; {beyond}"
        return (
            f"this model is too weak for its behavioural truth to separate glitch tokens from ordinary ones: {floor}, "
            f"and {self.best_indicator}'s top candidates fail at {self.top_rate:.1%}, within the floor's interval"
        )


def calibrate(
    control_verified: Sequence[bool],
    control_template_failed: Mapping[str, Sequence[bool]],
    n_truth: int,
    n_eligible: int,
    best_indicator: str | None,
    top_hits: int,
    top_k: int,
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
