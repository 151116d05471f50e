"""The prompt_search stage: choose target tokens from the catalog, search a prompt for each, store the results.

Unlike the one-transaction stages of :mod:`ingest.jobs.pipeline`, a prompt search
can take hours, so it commits one ``prompt_search`` row per finished target and
is resumable: an interrupted or failed run is picked up again by a later call
with the same parameters (same params hash and code version), which searches
only the targets that have no row yet. Catalog queries read succeeded runs
only, so rows of an unfinished run stay invisible until it completes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from catalog.database import CatalogError, first_line
from catalog.queries import latest_run_id, top_anomalous_query
from catalog.schema import EmbeddingStat, IngestRun, Model, PromptSearch, Token, TokenVerdict, utcnow
from ingest import __version__
from ingest.compute.prompts import OBJECTIVES, SEARCHES, BanRules, PromptLM, SearchParams, SearchResult, ban_rules
from ingest.load.models import LoadedModel
from ingest.stages.runs import StageResult, finish_run, insert_run, params_hash, succeeded_run

STAGE = "prompt_search"
# Controls are drawn from normal tokens in the less anomalous half of the vocabulary.
CONTROL_MAX_ANOMALY_SCORE = 0.5


@dataclass(frozen=True)
class Target:
    token_id: int
    role: str  # anomalous, verified, control or requested


@dataclass(frozen=True)
class TargetRequest:
    """Which tokens to search prompts for."""

    top: int = 0
    verified: int = 0
    controls: int = 0
    token_ids: tuple[int, ...] = ()
    texts: tuple[str, ...] = ()
    seed: int = 0


# --- target selection ----------------------------------------------------------------


def select_targets(session: Session, model: Model, request: TargetRequest) -> list[Target]:
    """Requested tokens first, then the top anomalous ones, the probes' verified ones, then random normal controls; each token once."""
    chosen: dict[int, str] = {}
    for token_id in _requested_ids(session, model, request):
        chosen.setdefault(token_id, "requested")
    for token_id in _verified_ids(session, model, request.verified):
        chosen.setdefault(token_id, "verified")
    if request.top or request.controls:
        stats_run = _stats_run(session, model)
        for token_id in session.scalars(select(top_anomalous_query(stats_run).limit(request.top).subquery().c.token_id)):
            chosen.setdefault(token_id, "anomalous")
        for token_id in _control_ids(session, stats_run, request.controls, request.seed):
            chosen.setdefault(token_id, "control")
    if not chosen:
        raise CatalogError("no target tokens: give --top, --verified, --controls, --tokens or --texts")
    return [Target(token_id, role) for token_id, role in chosen.items()]


def _stats_run(session: Session, model: Model) -> int:
    run_id = latest_run_id(session, model.id, "embedding_stats")
    if run_id is None:
        raise CatalogError(f"model {model.name!r} has no embedding statistics: --top and --controls need `glitchdex ingest` first")
    return run_id


def _requested_ids(session: Session, model: Model, request: TargetRequest) -> list[int]:
    found = set(session.scalars(select(Token.token_id).where(Token.tokenizer_id == model.tokenizer_id, Token.token_id.in_(request.token_ids))))
    missing = [str(t) for t in request.token_ids if t not in found]
    if missing:
        raise CatalogError(f"token id(s) {', '.join(missing)} not in the vocabulary of {model.name!r}")
    by_text: dict[str, int] = {}
    for token_id, text in session.execute(
        select(Token.token_id, Token.text).where(Token.tokenizer_id == model.tokenizer_id, Token.text.in_(request.texts)).order_by(Token.token_id)
    ):
        by_text.setdefault(text, token_id)
    unknown = [repr(t) for t in request.texts if t not in by_text]
    if unknown:
        raise CatalogError(f"text(s) {', '.join(unknown)} are no single token of {model.name!r} (see `glitchdex token TEXT`)")
    return list(request.token_ids) + [by_text[t] for t in request.texts]


def _verified_ids(session: Session, model: Model, n: int) -> list[int]:
    """The n verified glitch tokens of the latest probes run with the lowest target probability."""
    if n == 0:
        return []
    probes_run = latest_run_id(session, model.id, "probes")
    if probes_run is None:
        raise CatalogError(f"model {model.name!r} has not been probed: --verified needs `glitchdex probe {model.spec}` first")
    return list(
        session.scalars(
            select(TokenVerdict.token_id)
            .where(TokenVerdict.run_id == probes_run, TokenVerdict.verdict == "verified")
            .order_by(TokenVerdict.max_target_prob, TokenVerdict.token_id)
            .limit(n)
        )
    )


def _control_ids(session: Session, stats_run: int, n: int, seed: int) -> list[int]:
    if n == 0:
        return []
    pool = session.scalars(
        select(EmbeddingStat.token_id)
        .join(Token, (Token.tokenizer_id == EmbeddingStat.tokenizer_id) & (Token.token_id == EmbeddingStat.token_id))
        .where(EmbeddingStat.run_id == stats_run, Token.category == "normal", EmbeddingStat.anomaly_score < CONTROL_MAX_ANOMALY_SCORE)
        .order_by(EmbeddingStat.token_id)
    ).all()
    picks = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    return [pool[i] for i in picks.tolist()]


# --- running -------------------------------------------------------------------------

ResultCallback = Callable[[dict[str, Any]], None]


def run_prompt_search(
    engine: Engine,
    loaded: LoadedModel,
    targets: Sequence[Target],
    params: SearchParams = SearchParams(),
    *,
    device: str = "cpu",
    force: bool = False,
    eval_chunk: int = 512,
    on_result: ResultCallback | None = None,
) -> StageResult:
    """Search prompts for ``targets`` with ``loaded`` (weights on ``device``); resumes an unfinished run with the same params."""
    check_search_params(params)
    with Session(engine) as session:
        model = _catalogued_model(session, loaded)
        bans, stats_run = catalog_ban_rules(session, model, params, loaded.embedding_rows)
        model_id, tokenizer_id = model.id, model.tokenizer_id
    before_ids, after_ids = frame_ids(loaded.tokenizer, params)
    prefix_ids = special_prefix_ids(loaded.tokenizer) + before_ids
    inits = spelled_pieces(loaded.tokenizer, bans, [t.token_id for t in targets])
    run_params = {
        "search": dataclasses.asdict(params),
        "targets": [[t.token_id, t.role] for t in targets],
        "prefix_ids": prefix_ids,
        "suffix_ids": after_ids,
        "dtype": str(loaded.model.dtype).removeprefix("torch."),
        "anomaly_stats_run": stats_run,
    }
    run_id, state = start_or_resume_run(engine, model_id, run_params, device=device, force=force)
    if state == "skipped":
        return StageResult(STAGE, "skipped", run_id, 0.0, detail=f"run {run_id} already succeeded with these params")
    start = time.perf_counter()
    try:
        lm = PromptLM(loaded.model, prefix_ids, device, suffix_ids=after_ids)
        roles = {t.token_id: t.role for t in targets}
        for method in params.methods:
            pending = [t.token_id for t in targets if t.token_id not in _done_ids(engine, run_id, method)]
            for result in SEARCHES[method](lm, pending, bans, params, inits=inits, eval_chunk=eval_chunk):
                row = result_row(result, lm, loaded.tokenizer, bans, params)
                row.update(run_id=run_id, model_id=model_id, tokenizer_id=tokenizer_id, target_role=roles[result.token_id], device=str(lm.device))
                with engine.begin() as conn:
                    conn.execute(insert(PromptSearch), row)
                if on_result is not None:
                    on_result(row)
    except BaseException as exc:
        _record_failure(engine, run_id, exc, time.perf_counter() - start)
        if isinstance(exc, Exception) and not isinstance(exc, CatalogError):
            raise CatalogError(f"stage {STAGE} failed: {first_line(exc)}") from exc
        raise
    with engine.begin() as conn:
        n_rows = conn.scalar(select(func.count()).select_from(PromptSearch).where(PromptSearch.run_id == run_id))
        earlier = conn.scalar(select(IngestRun.seconds).where(IngestRun.id == run_id)) or 0.0
        seconds = earlier + time.perf_counter() - start
        finish_run(conn, run_id, "succeeded", n_rows=n_rows, seconds=seconds, error=None)
    return StageResult(STAGE, "succeeded", run_id, seconds, n_rows, detail=state)


def _catalogued_model(session: Session, loaded: LoadedModel) -> Model:
    model = session.scalars(select(Model).where(Model.name == loaded.name, Model.revision == loaded.revision)).first()
    if model is None:
        raise CatalogError(f"model {loaded.name!r} at this revision is not in the catalog: run `glitchdex ingest {loaded.spec}` first")
    if not loaded.has_weights or loaded.tokenizer is None:
        raise CatalogError(f"model {loaded.name!r} has no weights: prompt search needs a causal LM")
    return model


def catalog_ban_rules(session: Session, model: Model, params: SearchParams, d_vocab: int) -> tuple[BanRules, int | None]:
    """Bans from the token table, and the embedding_stats run whose top tokens count as anomalous (None if none)."""
    rows = session.execute(select(Token.token_id, Token.text, Token.is_special).where(Token.tokenizer_id == model.tokenizer_id)).all()
    stats_run = latest_run_id(session, model.id, "embedding_stats")
    anomalous = []
    if stats_run is not None:
        anomalous = list(session.scalars(select(top_anomalous_query(stats_run).limit(params.n_anomalous).subquery().c.token_id)))
    bans = ban_rules(
        {r.token_id: r.text for r in rows},
        [r.token_id for r in rows if r.is_special],
        anomalous,
        allow_anomalous=params.allow_anomalous,
        d_vocab=d_vocab,
    )
    return bans, stats_run


def special_prefix_ids(tokenizer: Any) -> list[int]:
    """Ids the tokenizer puts before any text (BOS for Gemma, nothing for SmolLM2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:start]


def check_search_params(params: SearchParams) -> None:
    """A one-line error for settings no search can run with, before anything is loaded or written."""
    unknown = set(params.methods) - set(SEARCHES)
    if unknown:
        raise CatalogError(f"unknown search method(s) {', '.join(sorted(unknown))}; known: {', '.join(SEARCHES)}")
    if params.objective not in OBJECTIVES:
        raise CatalogError(f"unknown objective {params.objective!r}; known: {', '.join(OBJECTIVES)}")
    try:
        params.frame_parts()
    except ValueError as exc:
        raise CatalogError(str(exc)) from None


def frame_ids(tokenizer: Any, params: SearchParams) -> tuple[list[int], list[int]]:
    """Token ids of the frame's text before and after the optimised slot."""
    before, after = params.frame_parts()
    before_ids, after_ids = (tokenizer(text, add_special_tokens=False)["input_ids"] if text else [] for text in (before, after))
    return before_ids, after_ids


def spelled_pieces(tokenizer: Any, bans: BanRules, target_ids: Sequence[int]) -> dict[int, list[int]]:
    """Per target, its text encoded as two halves (the split giving the fewest tokens): a search's first start.

    A target of one character has no such spelling and starts from random tokens.
    """
    pieces = {}
    for token_id in target_ids:
        text = str(bans.texts[token_id])
        # A whitespace-only half (' ' + 'marks') spells the word far less recognisably than ' mar' + 'ks'.
        cuts = [k for k in range(1, len(text)) if text[:k].strip() and text[k:].strip()] or range(1, len(text))
        splits = [tokenizer(text[:k], add_special_tokens=False)["input_ids"] + tokenizer(text[k:], add_special_tokens=False)["input_ids"] for k in cuts]
        allowed = [ids for ids in splits if not any(bool(bans.always_banned[i]) for i in ids)]
        if allowed:
            pieces[token_id] = min(allowed, key=len)
    return pieces


def result_row(result: SearchResult, lm: PromptLM, tokenizer: Any, bans: BanRules, params: SearchParams) -> dict[str, Any]:
    """A prompt_search row for one result, with the checks made on the final prompt."""
    prompt = torch.tensor([result.prompt_ids], device=lm.device)
    text = tokenizer.decode(result.prompt_ids)
    needle = str(bans.texts[result.token_id]).strip()
    return {
        "token_id": result.token_id,
        "method": result.method,
        "prompt_ids": " ".join(map(str, result.prompt_ids)),
        "prompt_text": text,
        "target_logprob": result.logprob,
        "target_rank": result.rank,
        "margin": result.margin,
        "relaxed_logprob": result.relaxed_logprob,
        "greedy_emits": int(lm.greedy_next_ids(prompt)[0]) == result.token_id,
        "reencodes": tokenizer(text, add_special_tokens=False)["input_ids"] == result.prompt_ids,
        "prompt_contains_target": bool(needle) and needle in text,
        "anomalous_allowed": params.allow_anomalous,
        "n_banned": result.n_banned,
        "steps": result.steps,
        "budget_steps": params.max_steps if result.method == "gcg" else params.continuous_steps,
        "restarts": result.restarts,
        "n_evaluations": result.n_evaluations,
        "seconds": result.seconds,
        "seed": result.seed,
        "loss_trajectory": result.trajectory,
        "finished_at": utcnow(),
    }


# --- resumable runs ------------------------------------------------------------------


def start_or_resume_run(engine: Engine, model_id: int, params: dict[str, Any], *, device: str, force: bool) -> tuple[int, str]:
    """(run id, 'skipped' | 'resumed' | 'started'): skip a succeeded run, resume an unfinished one, else start one."""
    with engine.begin() as conn:
        done = succeeded_run(conn, model_id, STAGE, params)
        if done is not None and not force:
            return done, "skipped"
        unfinished = None if force else _unfinished_run(conn, model_id, params)
        if unfinished is not None:
            conn.execute(update(IngestRun).where(IngestRun.id == unfinished).values(status="running", error=None, finished_at=None, device=device))
            return unfinished, "resumed"
        return insert_run(conn, model_id, STAGE, params, device), "started"


def _unfinished_run(conn: Connection, model_id: int, params: dict[str, Any]) -> int | None:
    return conn.scalar(
        select(IngestRun.id)
        .where(
            IngestRun.model_id == model_id,
            IngestRun.stage == STAGE,
            IngestRun.params_hash == params_hash(params),
            IngestRun.code_version == __version__,
            IngestRun.status.in_(("running", "failed")),
        )
        .order_by(IngestRun.id.desc())
        .limit(1)
    )


def _done_ids(engine: Engine, run_id: int, method: str) -> set[int]:
    with engine.connect() as conn:
        return set(conn.scalars(select(PromptSearch.token_id).where(PromptSearch.run_id == run_id, PromptSearch.method == method)))


def _record_failure(engine: Engine, run_id: int, exc: BaseException, seconds: float) -> None:
    message = "interrupted" if isinstance(exc, KeyboardInterrupt) else first_line(exc)
    with engine.begin() as conn:
        earlier = conn.scalar(select(IngestRun.seconds).where(IngestRun.id == run_id)) or 0.0
        finish_run(conn, run_id, "failed", error=f"{message} (finished targets are kept; rerun to resume)", seconds=earlier + seconds)

