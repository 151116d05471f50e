"""Behavioural probes: verdicts, transcripts and the precision of each indicator."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.keys import readable_text
from catalog.queries.runs import require_run
from catalog.schema import (
    IndicatorPrecision,
    Model,
    ProbeResult,
    ProbeTemplate,
    Token,
    TokenVerdict,
)


@dataclass(frozen=True)
class TokenVerdictRow:
    token_id: int
    piece: str
    category: str
    selected_by: str
    verdict: str
    max_target_prob: float | None
    n_probes: int
    n_passed: int
    failure_category: str | None
    raw_bytes: bytes | None

    @property
    def readable(self) -> str:
        return readable_text(self.raw_bytes, self.piece)


@dataclass(frozen=True)
class ProbeTranscript:
    template: str
    version: int
    kind: str
    output: str
    target_prob: float
    target_rank: int
    position_probs: list[float]
    passed: bool
    failure_category: str | None


@dataclass(frozen=True)
class PrecisionRow:
    indicator: str
    n_selected: int
    n_tested: int
    n_verified: int
    n_weakly_verified: int
    precision: float | None
    precision_weak: float | None


def _probes_run(session: Session, model_name: str) -> tuple[Model, int]:
    return require_run(session, model_name, "probes", "has not been probed yet: run `glitchdex probe {spec}`")


def token_verdicts(session: Session, model_name: str, verdict: str | None = None, limit: int | None = None) -> list[TokenVerdictRow]:
    """Verdicts of the model's latest probes run, lowest target probability first."""
    model, run_id = _probes_run(session, model_name)
    query = (
        select(
            TokenVerdict.token_id,
            Token.piece,
            Token.category,
            TokenVerdict.selected_by,
            TokenVerdict.verdict,
            TokenVerdict.max_target_prob,
            TokenVerdict.n_probes,
            TokenVerdict.n_passed,
            TokenVerdict.failure_category,
            Token.raw_bytes,
        )
        .join(Token, (Token.tokenizer_id == TokenVerdict.tokenizer_id) & (Token.token_id == TokenVerdict.token_id))
        .where(TokenVerdict.run_id == run_id)
        .order_by(TokenVerdict.max_target_prob.asc().nulls_last(), TokenVerdict.token_id)
        .limit(limit)
    )
    if verdict is not None:
        query = query.where(TokenVerdict.verdict == verdict)
    return [TokenVerdictRow(**row._mapping) for row in session.execute(query).all()]


def probe_transcripts(session: Session, model_name: str, token_id: int) -> list[ProbeTranscript]:
    """Every probe of one token in the model's latest probes run, in template order."""
    _, run_id = _probes_run(session, model_name)
    rows = session.execute(
        select(
            ProbeTemplate.name.label("template"),
            ProbeTemplate.version,
            ProbeTemplate.kind,
            ProbeResult.output,
            ProbeResult.target_prob,
            ProbeResult.target_rank,
            ProbeResult.position_probs,
            ProbeResult.passed,
            ProbeResult.failure_category,
        )
        .join(ProbeTemplate, ProbeTemplate.id == ProbeResult.template_id)
        .where(ProbeResult.run_id == run_id, ProbeResult.token_id == token_id)
        .order_by(ProbeTemplate.id)
    ).all()
    return [ProbeTranscript(**row._mapping) for row in rows]


def indicator_precision(session: Session, model_name: str) -> list[PrecisionRow]:
    """Share of each indicator's top-N candidates (and of the control sample) that the latest probes run verified."""
    _, run_id = _probes_run(session, model_name)
    rows = session.execute(
        select(
            IndicatorPrecision.indicator,
            IndicatorPrecision.n_selected,
            IndicatorPrecision.n_tested,
            IndicatorPrecision.n_verified,
            IndicatorPrecision.n_weakly_verified,
            IndicatorPrecision.precision,
            IndicatorPrecision.precision_weak,
        )
        .where(IndicatorPrecision.run_id == run_id)
        .order_by(IndicatorPrecision.indicator)
    ).all()
    return [PrecisionRow(**row._mapping) for row in rows]

# --- browsing (the dashboard) --------------------------------------------------------
# These build SELECTs; the dashboard runs them, caches the results and pages them.
