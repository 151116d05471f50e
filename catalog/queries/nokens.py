"""Nokens: experiments, per-generator summaries and transcripts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError
from catalog.queries.runs import find_model
from catalog.schema import (
    IngestRun,
    Noken,
    NokenProbeResult,
    ProbeTemplate,
    Token,
)


@dataclass(frozen=True)
class NokenRunRow:
    run_id: int
    space: str
    layer: int | None
    mode: str
    n_nokens: int
    finished_at: Any


def noken_runs_query(model_id: int) -> Select:
    """The model's succeeded nokens runs, newest first."""
    return (
        select(IngestRun.id.label("run_id"), Noken.space, Noken.layer, Noken.mode, func.count().label("n_nokens"), IngestRun.finished_at)
        .join(Noken, Noken.run_id == IngestRun.id)
        .where(IngestRun.model_id == model_id, IngestRun.stage == "nokens", IngestRun.status == "succeeded")
        .group_by(IngestRun.id, Noken.space, Noken.layer, Noken.mode, IngestRun.finished_at)
        .order_by(IngestRun.id.desc())
    )


def noken_runs(session: Session, model_name: str) -> list[NokenRunRow]:
    model = find_model(session, model_name)
    return [NokenRunRow(**row._mapping) for row in session.execute(noken_runs_query(model.id)).all()]


def _noken_run(session: Session, model_name: str, run_id: int | None) -> int:
    """The given run if it is one of the model's succeeded nokens runs, else its latest; a one-line error if none."""
    runs = [row.run_id for row in noken_runs(session, model_name)]
    if not runs:
        raise CatalogError(f"model {model_name!r} has no nokens run yet: run `glitchdex nokens {model_name}` first")
    if run_id is not None and run_id not in runs:
        raise CatalogError(f"run {run_id} is not a succeeded nokens run of {model_name!r}; its runs: {', '.join(map(str, runs))}")
    return run_id if run_id is not None else runs[0]


@dataclass(frozen=True)
class NokenGeneratorRow:
    generator: str
    n_nokens: int
    n_verified: int
    n_weakly_verified: int
    glitch_share: float
    mean_max_target_prob: float | None
    mean_kl_from_baseline: float
    output_changed_share: float
    mean_nearest_cos: float
    mean_norm_pct: float
    mean_rms_z_pct: float


def noken_summary_query(run_id: int) -> Select:
    """Per generator: verdicts, how far outputs moved from the real nearest token's, and how out-of-distribution the vectors are."""
    per_noken = (
        select(
            NokenProbeResult.noken_id,
            func.avg(NokenProbeResult.kl_from_baseline).label("kl"),
            func.avg(case((NokenProbeResult.output_changed, 1.0), else_=0.0)).label("changed"),
        )
        .where(NokenProbeResult.run_id == run_id)
        .group_by(NokenProbeResult.noken_id)
        .subquery()
    )
    verified = func.sum(case((Noken.verdict == "verified", 1), else_=0))
    weak = func.sum(case((Noken.verdict == "weakly_verified", 1), else_=0))
    glitch_share = ((verified + weak) * 1.0 / func.count()).label("glitch_share")
    return (
        select(
            Noken.generator,
            func.count().label("n_nokens"),
            verified.label("n_verified"),
            weak.label("n_weakly_verified"),
            glitch_share,
            func.avg(Noken.max_target_prob).label("mean_max_target_prob"),
            func.avg(per_noken.c.kl).label("mean_kl_from_baseline"),
            func.avg(per_noken.c.changed).label("output_changed_share"),
            func.avg(Noken.nearest_cos).label("mean_nearest_cos"),
            func.avg(Noken.norm_pct).label("mean_norm_pct"),
            func.avg(Noken.rms_z_pct).label("mean_rms_z_pct"),
        )
        .join(per_noken, per_noken.c.noken_id == Noken.noken_id)
        .where(Noken.run_id == run_id)
        .group_by(Noken.generator)
        .order_by(glitch_share.desc(), Noken.generator)
    )


def noken_summary(session: Session, model_name: str, run_id: int | None = None) -> list[NokenGeneratorRow]:
    """Which generator makes the most glitch-like nokens, in the given (default: latest) nokens run."""
    query = noken_summary_query(_noken_run(session, model_name, run_id))
    return [NokenGeneratorRow(**row._mapping) for row in session.execute(query).all()]


def nokens_query(run_id: int) -> Select:
    """Every noken of a run with its nearest real token's piece."""
    return (
        select(
            Noken.noken_id,
            Noken.generator,
            Noken.details,
            Noken.verdict,
            Noken.max_target_prob,
            Noken.failure_category,
            Token.piece.label("nearest_piece"),
            Noken.nearest_token_id,
            Noken.nearest_cos,
            Noken.norm,
            Noken.norm_pct,
            Noken.centroid_dist_pct,
            Noken.rms_z,
            Noken.rms_z_pct,
            Noken.source_token_id,
            Noken.source2_token_id,
        )
        .join(Token, (Token.tokenizer_id == Noken.tokenizer_id) & (Token.token_id == Noken.nearest_token_id))
        .where(Noken.run_id == run_id)
        .order_by(Noken.noken_id)
    )


def noken_transcripts_query(run_id: int, noken_id: int) -> Select:
    """One noken's probes beside the same probes of its nearest real token."""
    return (
        select(
            ProbeTemplate.name.label("template"),
            NokenProbeResult.output,
            NokenProbeResult.baseline_output,
            NokenProbeResult.target_prob,
            NokenProbeResult.target_rank,
            NokenProbeResult.passed,
            NokenProbeResult.failure_category,
            NokenProbeResult.kl_from_baseline,
            NokenProbeResult.output_changed,
        )
        .join(ProbeTemplate, ProbeTemplate.id == NokenProbeResult.template_id)
        .where(NokenProbeResult.run_id == run_id, NokenProbeResult.noken_id == noken_id)
        .order_by(ProbeTemplate.name)
    )


def noken_transcripts(session: Session, model_name: str, noken_id: int, run_id: int | None = None) -> list[Any]:
    """One noken's probes beside its nearest real token's (given or latest nokens run); a one-line error for an unknown noken."""
    run = _noken_run(session, model_name, run_id)
    rows = session.execute(noken_transcripts_query(run, noken_id)).all()
    if not rows:
        raise CatalogError(f"nokens run {run} has no noken {noken_id}")
    return rows
