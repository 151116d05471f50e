"""Detection quality: the evaluation table of a model and the verified tokens every indicator missed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError
from catalog.keys import readable_text
from catalog.queries.runs import require_run
from catalog.queries.status import UPSTREAM_KEY
from catalog.schema import Evaluation, IngestRun, Token, TokenVerdict

BUDGET_ORDER = ("0.5%", "1%", "2%", "5%", "10%", "R")


@dataclass(frozen=True)
class EvaluationRun:
    run_id: int
    model: str
    probes_run_id: int
    params: dict[str, Any]

    @property
    def statement(self) -> str:
        return self.params["calibration"]["statement"]


@dataclass(frozen=True)
class MissedToken:
    token_id: int
    piece: str
    raw_bytes: bytes | None
    category: str
    max_target_prob: float | None
    failure_category: str | None

    @property
    def readable(self) -> str:
        return readable_text(self.raw_bytes, self.piece)


def latest_evaluation(session: Session, model_name: str) -> EvaluationRun:
    model, run_id = require_run(session, model_name, "evaluation", "has not been evaluated yet: run `glitchdex evaluate {spec}`")
    run = session.get(IngestRun, run_id)
    return EvaluationRun(run_id, model.name, run.params[UPSTREAM_KEY]["probes"], run.params)


def evaluation_query(run_id: int) -> Select:
    """Every row of one evaluation run (order the budgets with BUDGET_ORDER)."""
    return select(*Evaluation.__table__.columns).where(Evaluation.run_id == run_id).order_by(Evaluation.indicator)


def evaluation_rows(session: Session, run_id: int) -> list[Row]:
    """The rows of one evaluation run, by indicator, budgets in BUDGET_ORDER."""
    rows = session.execute(evaluation_query(run_id)).all()
    return sorted(rows, key=lambda r: (r.indicator, BUDGET_ORDER.index(r.budget)))


def missed_tokens(session: Session, evaluation: EvaluationRun, budget: str = "2%") -> list[MissedToken]:
    """Verified tokens that no indicator ranks within ``budget``, with their facts and verdicts."""
    missed = evaluation.params["missed_by_all"]
    if budget not in missed:
        raise CatalogError(f"unknown budget {budget!r}; evaluated: {', '.join(missed)}")
    rows = session.execute(
        select(Token.token_id, Token.piece, Token.raw_bytes, Token.category, TokenVerdict.max_target_prob, TokenVerdict.failure_category)
        .join(TokenVerdict, (TokenVerdict.tokenizer_id == Token.tokenizer_id) & (TokenVerdict.token_id == Token.token_id))
        .where(TokenVerdict.run_id == evaluation.probes_run_id, Token.token_id.in_(missed[budget]))
        .order_by(TokenVerdict.max_target_prob, Token.token_id)
    ).all()
    return [MissedToken(**row._mapping) for row in rows]
