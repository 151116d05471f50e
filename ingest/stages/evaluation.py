"""The ``evaluation`` stage: how much of a model's behavioural truth each indicator finds.

The truth is the latest sweep probes run (the whole vocabulary, or a seeded
sample with ``--sample``, uniform or ``--stratify``-ed): its verified tokens. A
stratified sample's figures are weighted by the strata stored with the run.
Every indicator ranks the same tokens, those probed that are neither special
nor placeholders:

- each embedding statistic of the latest embedding_stats run;
- the new indicators, computed here from the weights and stored in
  ``token_indicator``: ``head_projection`` (LM head alone), ``identical_rows``
  (tokens sharing one embedding or unembedding row) and ``first_forward``
  (one forward per ranked token);
- each tokenizer category, as a yes/no score;
- ``elicitability``, where prompt searches ran (``glitchdex prompts``): minus
  the best target log-prob any method's latest search reached (higher = harder
  to make the model emit). Searches cost tens of forwards per token, so this
  indicator covers candidates and samples only; unsearched tokens have no
  score and are never its candidates (see ``ingest.compute.evaluation``).

Rows of ``evaluation`` hold precision, recall and F1 at each budget, R-precision
and average precision, and ``any_indicator`` (the union of every indicator's
candidates: what none of them finds). The run's params hold the calibration: the
share of control tokens the truth also calls verified, per template and overall,
the verified count as excess over that floor, and a plain statement of whether
the truth separates glitch tokens from ordinary ones on this model.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from torch import Tensor

from catalog.database import CatalogError, bulk_insert
from catalog.queries import best_search_query, require_run
from catalog.queries.status import UPSTREAM_KEY
from catalog.schema import (
    EmbeddingStat,
    Evaluation,
    IngestRun,
    Model,
    ProbeResult,
    ProbeTemplate,
    Token,
    TokenIndicator,
    TokenVerdict,
)
from ingest.compute.embedding_stats import head_projection_score, identical_row_counts
from ingest.compute.evaluation import (
    BUDGETS,
    CATEGORY_PREFIX,
    LEARNED,
    R_PRECISION,
    Calibration,
    IndicatorFigures,
    calibrate,
    candidates_at,
    effective_counts,
    estimated_count,
    evaluate_indicator,
    learned_scores,
    union_figures,
    wilson_interval,
)
from ingest.compute.probes import first_forward_scores
from ingest.compute.sampling import stratum_weights
from ingest.load.models import LoadedModel, is_causal_lm
from ingest.stages.base import Unit, build_params
from ingest.stages.probes import CONTROL
from ingest.stages.runs import ResumableWork

STAGE = "evaluation"
ELICITABILITY = "elicitability"
NOT_RANKED = ("special", "placeholder")  # the indicators' reference or no token at all: never counted as findings
TRUTH_VERDICT = "verified"
CALIBRATION_BUDGET = 0.02
# Embedding statistics as scores, higher = more anomalous (low norms and nearness to the centroid are anomalous).
STAT_SCORES = {
    "anomaly_score": (EmbeddingStat.anomaly_score, 1.0),
    "unused_cos": (EmbeddingStat.unused_cos, 1.0),
    "embed_norm": (EmbeddingStat.embed_norm, -1.0),
    "unembed_norm": (EmbeddingStat.unembed_norm, -1.0),
    "centroid_dist": (EmbeddingStat.centroid_dist, -1.0),
    "centroid_cos": (EmbeddingStat.centroid_cos, 1.0),
}


@dataclass(frozen=True)
class EvaluationParams:
    budgets: tuple[float, ...] = BUDGETS
    head_directions: int = 16  # leading singular directions of head_projection
    identical_tolerance: float = 1e-3  # identical_rows: rows equal after rounding to this x the matrix RMS
    first_forward: bool = True  # one forward per ranked token (causal LMs)
    learned: bool = True  # a logistic regression on every other evaluated model's indicators and truth
    batch_size: int = 256


@dataclass
class Truth:
    """The ranked tokens and their verdicts, from the probes run."""

    token_ids: Tensor  # [n] ranked token ids, ascending
    verified: Tensor  # [n] bool
    controls: list[int]  # control tokens of the probes run (ranked or not)
    control_verified: list[bool]
    sampled: bool  # a seeded sample, not the whole vocabulary: figures are estimates with intervals
    categories: dict[int, str]  # every token's category
    weights: Tensor  # [n] float64: population tokens each ranked token stands for (1 unless the sample is stratified)
    stratified: bool


def require_sweep_run(session: Session, model_name: str) -> int:
    """The model's latest probes run, which must be a sweep (candidate runs rank only the indicators' own tops)."""
    _, probes_run = require_run(session, model_name, "probes", "has no probes run: run `glitchdex probe {spec} --mode sweep` first")
    require_sweep(session.connection(), probes_run, model_name)
    return probes_run


def require_sweep(conn: Connection, probes_run: int, model_name: str) -> None:
    if conn.scalar(select(IngestRun.params).where(IngestRun.id == probes_run)).get("mode") != "sweep":
        raise CatalogError(
            f"the latest probes run ({probes_run}) probed candidates only; evaluation needs a sweep: `glitchdex probe {model_name} --mode sweep [--sample N]`"
        )


def read_truth(conn: Connection, tokenizer_id: int, probes_run: int) -> Truth:
    """The ranked tokens of a sweep probes run and their verdicts."""
    categories = dict(conn.execute(select(Token.token_id, Token.category).where(Token.tokenizer_id == tokenizer_id)).all())
    verdicts = conn.execute(
        select(TokenVerdict.token_id, TokenVerdict.verdict, TokenVerdict.selected_by).where(TokenVerdict.run_id == probes_run)
    ).all()
    probe_params = conn.scalar(select(IngestRun.params).where(IngestRun.id == probes_run))
    sampled = probe_params.get("sweep_sample") is not None or probe_params.get("sweep_limit") is not None
    drawn = stratum_weights(probe_params["strata"]) if "strata" in probe_params else None
    controls = [(r.token_id, r.verdict == TRUTH_VERDICT) for r in verdicts if CONTROL in r.selected_by.split(",")]
    control_ids = {token_id for token_id, _ in controls}
    # A sample's controls were added to it, not drawn (a stratified sample knows which were): leaving them out keeps the sample as drawn.
    added = control_ids - set(drawn or ()) if sampled else set()
    ranked = sorted(
        (r.token_id, r.verdict == TRUTH_VERDICT)
        for r in verdicts
        if r.verdict != "untested" and categories[r.token_id] not in NOT_RANKED and r.token_id not in added
    )
    return Truth(
        token_ids=torch.tensor([t for t, _ in ranked], dtype=torch.long),
        verified=torch.tensor([v for _, v in ranked], dtype=torch.bool),
        controls=[t for t, _ in controls],
        control_verified=[v for _, v in controls],
        sampled=sampled,
        categories=categories,
        weights=torch.tensor([drawn[t] if drawn is not None else 1.0 for t, _ in ranked], dtype=torch.float64),
        stratified=drawn is not None,
    )


def stat_scores(conn: Connection, stats_run: int, token_ids: Tensor) -> dict[str, Tensor]:
    """Each embedding statistic of a stats run as a score over ``token_ids`` (higher = more anomalous).  -> name: [n]."""
    columns = [column for column, _ in STAT_SCORES.values()]
    rows = conn.execute(select(EmbeddingStat.token_id, *columns).where(EmbeddingStat.run_id == stats_run)).all()
    by_id = {row[0]: row[1:] for row in rows}
    scores = {}
    for i, (name, (_, sign)) in enumerate(STAT_SCORES.items()):
        values = [by_id[t][i] if t in by_id else None for t in token_ids.tolist()]
        if all(v is None for v in values):
            continue  # e.g. unembed_norm of a tied model
        scores[name] = sign * torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float64)
    return scores


def elicitability_scores(conn: Connection, model_id: int, token_ids: Tensor) -> tuple[Tensor, list[int]] | None:
    """Minus the best log-prob the model's latest prompt searches reached, over ``token_ids`` (NaN where unsearched).

    -> ([n] float64, the prompt_search runs read), or None when no ranked token was searched.
    """
    best = {row.token_id: row for row in conn.execute(best_search_query(model_id))}
    searched = [t for t in token_ids.tolist() if t in best]
    if not searched:
        return None
    values = torch.tensor([-best[t].best_logprob if t in best else float("nan") for t in token_ids.tolist()], dtype=torch.float64)
    return values, sorted({best[t].run_id for t in searched})


def category_scores(truth: Truth) -> dict[str, Tensor]:
    """Each tokenizer category but 'normal' as a yes/no score over the ranked tokens."""
    ranked = [truth.categories[t] for t in truth.token_ids.tolist()]
    return {
        f"{CATEGORY_PREFIX}{name}": torch.tensor([c == name for c in ranked], dtype=torch.float32)
        for name in sorted(set(ranked) - {"normal"})
    }


@dataclass(frozen=True)
class EvaluatedModel:
    """Another model's latest evaluation: what the learned combination trains on."""

    name: str
    run_id: int
    scores: dict[str, Tensor]  # every stored indicator over its ranked tokens
    truth: Tensor  # [n] bool


def other_evaluations(conn: Connection, model_id: int) -> list[EvaluatedModel]:
    """The latest succeeded evaluation of every other model, its indicators read back from the catalog."""
    latest = (
        select(IngestRun.model_id, func.max(IngestRun.id).label("run_id"))
        .where(IngestRun.stage == STAGE, IngestRun.status == "succeeded", IngestRun.model_id != model_id)
        .group_by(IngestRun.model_id)
        .subquery()
    )
    evaluated = []
    for row in conn.execute(
        select(Model.name, Model.tokenizer_id, IngestRun.id, IngestRun.params)
        .join(latest, latest.c.run_id == IngestRun.id)
        .join(Model, Model.id == IngestRun.model_id)
        .order_by(Model.name)
    ):
        upstream = row.params[UPSTREAM_KEY]
        truth = read_truth(conn, row.tokenizer_id, upstream["probes"])
        scores = {**stat_scores(conn, upstream["embedding_stats"], truth.token_ids), **category_scores(truth)}
        stored = conn.execute(
            select(TokenIndicator.indicator, TokenIndicator.token_id, TokenIndicator.value).where(
                TokenIndicator.run_id == row.id, TokenIndicator.indicator != LEARNED
            )
        ).all()
        position = {t: i for i, t in enumerate(truth.token_ids.tolist())}
        for indicator in sorted({r.indicator for r in stored}):
            scores[indicator] = torch.full((len(position),), float("nan"), dtype=torch.float64)
        for r in stored:
            if r.token_id in position:
                scores[r.indicator][position[r.token_id]] = r.value
        evaluated.append(EvaluatedModel(row.name, row.id, scores, truth.verified))
    return evaluated


class EvaluationStage:
    """One step: rank the truth's tokens by every indicator and write the figures with the run's success."""

    name = STAGE
    params_type = EvaluationParams
    tables = (Evaluation.__table__, TokenIndicator.__table__)
    needs_weights = True
    uses_gpu = True
    reads_if_present = ("prompt_search",)  # elicitability, where prompts were searched

    def build(self, values: Mapping[str, Any]) -> EvaluationParams:
        return build_params(EvaluationParams, values)

    def depends_on(self, params: EvaluationParams) -> tuple[str, ...]:
        return ("embedding_stats", "probes")

    def run_params(self, params: EvaluationParams) -> dict[str, Any]:
        return {**dataclasses.asdict(params), "budgets": list(params.budgets)}

    def prepare(self, unit: Unit, params: EvaluationParams) -> ResumableWork:
        stats_run, probes_run = unit.upstream["embedding_stats"], unit.upstream["probes"]
        with unit.engine.connect() as conn:
            require_sweep(conn, probes_run, str(unit.model_id))
        evaluation = _Evaluation(unit.loaded, params, unit.model_id, unit.tokenizer_id, stats_run, probes_run, unit.device)
        return ResumableWork(finish=lambda conn, run_id, _params: evaluation.write(conn, run_id))


EVALUATION = EvaluationStage()


class _Evaluation:
    def __init__(self, loaded: LoadedModel, params: EvaluationParams, model_id: int, tokenizer_id: int, stats_run: int, probes_run: int, device: str):
        self.loaded, self.params, self.device = loaded, params, device
        self.model_id, self.tokenizer_id, self.stats_run, self.probes_run = model_id, tokenizer_id, stats_run, probes_run

    def write(self, conn: Connection, run_id: int) -> tuple[int, dict[str, Any]]:
        truth = read_truth(conn, self.tokenizer_id, self.probes_run)
        if not len(truth.token_ids):
            raise CatalogError(f"probes run {self.probes_run} has no rankable tokens (all special, placeholder or untested)")
        n_ids = max(truth.categories) + 1
        new_indicators = self._new_indicators(truth.token_ids, n_ids)
        scores = {**stat_scores(conn, self.stats_run, truth.token_ids), **{name: values[truth.token_ids] for name, values in new_indicators.items()}}
        elicitability = elicitability_scores(conn, self.model_id, truth.token_ids)
        if elicitability is not None:
            scores[ELICITABILITY] = elicitability[0]
            new_indicators[ELICITABILITY] = torch.full((n_ids,), float("nan"), dtype=torch.float64).index_put_((truth.token_ids,), elicitability[0])
        scores = {name: values.float() for name, values in scores.items()}
        scores.update(category_scores(truth))
        figures = [evaluate_indicator(name, values, truth.verified, truth.token_ids, self.params.budgets, truth.weights) for name, values in scores.items()]
        union, missed = union_figures(scores, truth.verified, truth.token_ids, self.params.budgets, truth.weights)
        learned, learned_report = self._learned(conn, scores, truth, figures)
        if learned is not None:
            figures.append(evaluate_indicator(LEARNED, learned, truth.verified, truth.token_ids, self.params.budgets, truth.weights))
            new_indicators[LEARNED] = torch.full((n_ids,), float("nan"), dtype=torch.float64).index_put_((truth.token_ids,), learned.double())
            learned_report = {**learned_report, **self._learned_verdict(figures)}
        indicator_rows = self._token_indicator_rows(run_id, new_indicators, truth.categories)
        rows = [row for f in [*figures, union] for row in self._evaluation_rows(run_id, f, truth)]
        n_rows = bulk_insert(conn, Evaluation.__table__, rows) + bulk_insert(conn, TokenIndicator.__table__, indicator_rows)
        calibration = self._calibration(conn, truth, figures, {**scores, **({LEARNED: learned} if learned is not None else {})})
        extra = {
            "truth": f"verdict {TRUTH_VERDICT!r} of probes run {self.probes_run} (target probability below the threshold in every target template)",
            "sampled": truth.sampled,
            "n_ranked": len(truth.token_ids),
            "n_truth": int(truth.verified.sum()),
            "best_indicator": calibration.best_indicator,
            "calibration": {**dataclasses.asdict(calibration), "statement": calibration.statement},
            "learned": learned_report,
            "elicitability": self._elicitability_report(elicitability, truth),
            "missed_by_all": {label: ids.tolist() for label, ids in missed.items()},
        }
        if truth.stratified:
            estimate, interval = estimated_count(truth.verified, truth.weights)
            extra["stratified"] = {"population": float(truth.weights.sum()), "estimated_n_truth": estimate, "estimated_n_truth_interval": interval}
        return n_rows, extra

    def _learned(self, conn: Connection, scores: dict[str, Tensor], truth: Truth, figures: list[IndicatorFigures]) -> tuple[Tensor | None, dict[str, Any]]:
        """The learned combination, trained on every other evaluated model of the catalog (leave this one out)."""
        if not self.params.learned:
            return None, {"statement": "not computed (learned = false)"}
        training = [m for m in other_evaluations(conn, self.model_id) if m.truth.any() and not m.truth.all()]
        if not training:
            return None, {"statement": "no other evaluated model in the catalog to learn from: evaluate another model, then this one again"}
        values, features = learned_scores([(m.scores, m.truth) for m in training], scores, len(truth.token_ids))
        trained_on = [{"model": m.name, "evaluation_run": m.run_id, "n_ranked": len(m.truth), "n_truth": int(m.truth.sum())} for m in training]
        return values.float(), {"trained_on": trained_on, "features": features}

    @staticmethod
    def _elicitability_report(elicitability: tuple[Tensor, list[int]] | None, truth: Truth) -> dict[str, Any]:
        if elicitability is None:
            return {"statement": "no ranked token has a prompt search: run `glitchdex prompts` on candidates or sample tokens, then evaluate again"}
        values, runs = elicitability
        searched = ~values.isnan()
        return {"prompt_search_runs": runs, "n_searched": int(searched.sum()), "n_truth_searched": int((searched & truth.verified).sum())}

    @staticmethod
    def _learned_verdict(figures: list[IndicatorFigures]) -> dict[str, Any]:
        """Whether the learned combination beats every single indicator's R-precision on this (held-out) model."""
        r_precision = {f.indicator: next(r.precision for r in f.budgets if r.budget == R_PRECISION) or 0.0 for f in figures}
        mine = r_precision.pop(LEARNED)
        best = max(r_precision, key=r_precision.get)
        beats = mine > r_precision[best]
        verb = "beats" if beats else "does not beat"
        return {
            "r_precision": mine,
            "best_single": best,
            "best_single_r_precision": r_precision[best],
            "beats_every_single_indicator": beats,
            "statement": f"the learned combination (R-precision {mine:.3f}) {verb} the best single indicator, {best} ({r_precision[best]:.3f}), on this held-out model",
        }

    # --- inputs ----------------------------------------------------------------------

    def _new_indicators(self, ranked_ids: Tensor, n_ids: int) -> dict[str, Tensor]:
        """Values for token ids below ``n_ids`` (first_forward: NaN outside the ranked tokens).  -> name: [n_vocab]."""
        embed = self.loaded.input_embeddings()
        unembed = None if self.loaded.tied_embeddings else self.loaded.output_embeddings()
        head = unembed if unembed is not None else embed
        n_vocab = min(embed.shape[0], n_ids)
        identical = identical_row_counts(embed[:n_vocab], self.params.identical_tolerance, device=self.device)
        if unembed is not None:
            identical = torch.maximum(identical, identical_row_counts(unembed[:n_vocab], self.params.identical_tolerance, device=self.device))
        indicators = {
            "head_projection": head_projection_score(head[:n_vocab], self.params.head_directions, device=self.device).double(),
            "identical_rows": identical.double(),
        }
        if self.params.first_forward and self.loaded.model is not None and is_causal_lm(self.loaded.config):
            values = torch.full((n_vocab,), float("nan"), dtype=torch.float64)
            values[ranked_ids] = first_forward_scores(
                self.loaded.model, self.loaded.tokenizer, ranked_ids.tolist(), batch_size=self.params.batch_size, device=self.device
            )
            indicators["first_forward"] = values
        return indicators

    # --- outputs ---------------------------------------------------------------------

    def _token_indicator_rows(self, run_id: int, indicators: dict[str, Tensor], catalogued: dict[int, str]) -> list[dict[str, Any]]:
        rows = []
        for name, values in indicators.items():
            known = [t for t in torch.nonzero(~values.isnan()).flatten().tolist() if t in catalogued]
            listed = values.tolist()
            rows += [
                {"run_id": run_id, "indicator": name, "token_id": t, "model_id": self.model_id, "tokenizer_id": self.tokenizer_id, "value": listed[t]}
                for t in known
            ]
        return rows

    def _evaluation_rows(self, run_id: int, figures: IndicatorFigures, truth: Truth) -> list[dict[str, Any]]:
        n_truth = int(truth.verified.sum())
        rows = []
        for row in figures.budgets:
            precision_ci = wilson_interval(*row.precision_counts) if truth.sampled else None
            recall_ci = wilson_interval(*row.recall_counts) if truth.sampled else None
            rows.append(
                {
                    "run_id": run_id,
                    "indicator": figures.indicator,
                    "budget": row.budget,
                    "model_id": self.model_id,
                    "probes_run_id": self.probes_run,
                    "k": row.k,
                    "n_ranked": len(truth.token_ids),
                    "n_truth": n_truth,
                    "n_hits": row.n_hits,
                    "precision": row.precision,
                    "recall": row.recall,
                    "f1": row.f1,
                    "average_precision": figures.average_precision,
                    "precision_low": precision_ci[0] if precision_ci else None,
                    "precision_high": precision_ci[1] if precision_ci else None,
                    "recall_low": recall_ci[0] if recall_ci else None,
                    "recall_high": recall_ci[1] if recall_ci else None,
                    "n_missed": n_truth - row.n_hits,
                }
            )
        return rows

    def _calibration(self, conn: Connection, truth: Truth, figures: list[IndicatorFigures], scores: dict[str, Tensor]) -> Calibration:
        r_precision = {f.indicator: next(r.precision for r in f.budgets if r.budget == R_PRECISION) for f in figures}
        best = max(r_precision, key=lambda name: (r_precision[name] or 0.0, name == "anomaly_score")) if r_precision else None
        population = float(truth.weights.sum())
        top_hits, top_k = 0, 0
        if best:
            top = candidates_at(scores[best], truth.token_ids, truth.weights, CALIBRATION_BUDGET * population)
            top_hits, top_k = effective_counts(truth.weights[top], truth.verified[top])
        n_truth = float(truth.weights[truth.verified].sum())
        return calibrate(
            truth.control_verified, self._control_template_failures(conn, truth.controls), n_truth, population, best, top_hits, top_k,
        )

    def _control_template_failures(self, conn: Connection, controls: list[int]) -> dict[str, list[bool]]:
        failed: dict[str, list[bool]] = defaultdict(list)
        for row in conn.execute(
            select(ProbeTemplate.name, ProbeResult.passed)
            .join(ProbeTemplate, ProbeTemplate.id == ProbeResult.template_id)
            .where(ProbeResult.run_id == self.probes_run, ProbeResult.token_id.in_(controls))
        ):
            failed[row.name].append(not row.passed)
        return dict(failed)

