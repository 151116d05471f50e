"""The prompt_search stage: choose target tokens from the catalog, search a prompt for each, store the results.

A prompt search can take hours, so the runner commits it in chunks of
(method, target) items: an interrupted run is picked up again with the same
parameters and searches only the items that have no row yet. Catalog queries
read succeeded runs only, so rows of an unfinished run stay invisible until it
completes. Targets come from the current embedding statistics (the most
anomalous tokens, and controls) or, with ``targets = "verified"``, from the
current probes run's verified tokens.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from catalog.database import CatalogError, bulk_insert
from catalog.queries import in_tokenizer, top_anomalous_query
from catalog.schema import EmbeddingStat, Model, PromptSearch, Token, TokenVerdict, utcnow
from ingest.compute.prompts import OBJECTIVES, SEARCHES, BanRules, PromptLM, SearchParams, SearchResult, ban_rules
from ingest.stages.base import ParamError, Unit, build_params
from ingest.stages.probes import require_causal_lm
from ingest.stages.runs import ResumableWork

STAGE = "prompt_search"
# Controls are drawn from normal tokens in the less anomalous half of the vocabulary.
CONTROL_MAX_ANOMALY_SCORE = 0.5
TARGET_SOURCES = ("anomalous", "verified")


@dataclass(frozen=True)
class Target:
    token_id: int
    role: str  # anomalous, verified, control or requested


@dataclass(frozen=True)
class PromptParams:
    """Which tokens to search prompts for, and how (``search``); ``eval_chunk`` bounds memory, not results."""

    top: int = 0  # the N first tokens of the target source
    targets: str = "anomalous"  # anomalous: by anomaly_score; verified: the probes run's verified tokens, surest first
    controls: int = 0  # random normal tokens
    token_ids: tuple[int, ...] = ()
    texts: tuple[str, ...] = ()  # tokens whose decoded text is exactly one of these
    dtype: str = "float32"
    eval_chunk: int = 512
    search: SearchParams = field(default_factory=SearchParams)


# --- target selection ----------------------------------------------------------------


def select_targets(session: Session, model: Model, params: PromptParams, upstream: Mapping[str, int]) -> list[Target]:
    """Requested tokens first, then the top of the target source, then random normal controls; each token once."""
    chosen: dict[int, str] = {}
    for token_id in _requested_ids(session, model, params):
        chosen.setdefault(token_id, "requested")
    if params.targets == "verified":
        for token_id in _verified_ids(session, upstream["probes"], params.top):
            chosen.setdefault(token_id, "verified")
    elif params.top:
        for token_id in session.scalars(select(top_anomalous_query(upstream["embedding_stats"]).limit(params.top).subquery().c.token_id)):
            chosen.setdefault(token_id, "anomalous")
    for token_id in _control_ids(session, upstream.get("embedding_stats"), params.controls, params.search.seed):
        chosen.setdefault(token_id, "control")
    if not chosen:
        raise CatalogError(f"no target tokens for {model.name!r}: set top, controls, token_ids or texts (the probes run may have verified none)")
    return [Target(token_id, role) for token_id, role in chosen.items()]


def _verified_ids(session: Session, probes_run: int, n: int) -> list[int]:
    return list(
        session.scalars(
            select(TokenVerdict.token_id)
            .where(TokenVerdict.run_id == probes_run, TokenVerdict.verdict == "verified")
            .order_by(TokenVerdict.max_target_prob, TokenVerdict.token_id)
            .limit(n)
        )
    )


def _requested_ids(session: Session, model: Model, request: PromptParams) -> list[int]:
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


def _control_ids(session: Session, stats_run: int | None, n: int, seed: int) -> list[int]:
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


# --- the stage -----------------------------------------------------------------------


class PromptsStage:
    """Targets from the catalog; (method, target) items searched in chunks of a few slot batches."""

    name = STAGE
    params_type = PromptParams
    tables = (PromptSearch.__table__,)
    needs_weights = True
    uses_gpu = True
    reads_if_present = ()

    def build(self, values: Mapping[str, Any]) -> PromptParams:
        params = build_params(PromptParams, values)
        if params.targets not in TARGET_SOURCES:
            raise ParamError("targets", f"prompt targets must be one of {', '.join(TARGET_SOURCES)}, not {params.targets!r}")
        check_search_params(params.search)
        if not (params.top or params.controls or params.token_ids or params.texts):
            raise ParamError("top", "no target tokens: set top, controls, token_ids or texts")
        return params

    def depends_on(self, params: PromptParams) -> tuple[str, ...]:
        # The ban on anomalous tokens, the anomalous targets and the controls read the statistics.
        stats = params.top or params.controls or not params.search.allow_anomalous
        return ("embedding_stats",) * bool(stats) + ("probes",) * (params.targets == "verified")

    def run_params(self, params: PromptParams) -> dict[str, Any]:
        request = {key: getattr(params, key) for key in ("top", "targets", "controls", "token_ids", "texts")}
        return {"search": dataclasses.asdict(params.search), "targets": request, "dtype": params.dtype}

    def prepare(self, unit: Unit, params: PromptParams) -> ResumableWork:
        loaded = unit.loaded
        require_causal_lm(loaded, "prompt search needs a causal LM")
        loaded_dtype = str(loaded.model.dtype).removeprefix("torch.")
        if loaded_dtype != params.dtype:
            raise CatalogError(f"the model is loaded in {loaded_dtype} but the prompt params say {params.dtype}")
        with Session(unit.engine) as session:
            model = session.get(Model, unit.model_id)
            targets = select_targets(session, model, params, unit.upstream)
            bans = catalog_ban_rules(session, model, params.search, loaded.embedding_rows, unit.upstream.get("embedding_stats"))
        before_ids, after_ids = frame_ids(loaded.tokenizer, params.search)
        lm = PromptLM(loaded.model, special_prefix_ids(loaded.tokenizer) + before_ids, unit.device, suffix_ids=after_ids)
        inits = spelled_pieces(loaded.tokenizer, bans, [t.token_id for t in targets])
        search = _PromptRun(lm, loaded.tokenizer, bans, targets, inits, params, unit)
        return ResumableWork(pending=search.pending, process=search.process, finish=search.finish, chunk_size=2 * params.search.n_slots)


PROMPTS = PromptsStage()


class _PromptRun:
    """The chunk callbacks: items are (method, target token id), in method order."""

    def __init__(
        self, lm: PromptLM, tokenizer: Any, bans: BanRules, targets: list[Target], inits: dict[int, list[int]], params: PromptParams, unit: Unit
    ):
        self.lm, self.tokenizer, self.bans, self.inits, self.params = lm, tokenizer, bans, inits, params
        self.targets, self.roles = targets, {t.token_id: t.role for t in targets}
        self.model_id, self.tokenizer_id = unit.model_id, unit.tokenizer_id

    def pending(self, conn: Connection, run_id: int) -> list[tuple[str, int]]:
        searched = select(PromptSearch.method, PromptSearch.token_id).where(PromptSearch.run_id == run_id)
        done = {(method, token_id) for method, token_id in conn.execute(searched)}
        items = [(method, t.token_id) for method in self.params.search.methods for t in self.targets]
        return [item for item in items if item not in done]

    def process(self, conn: Connection, run_id: int, items: list[tuple[str, int]]) -> int:
        by_method: dict[str, list[int]] = defaultdict(list)
        for method, token_id in items:
            by_method[method].append(token_id)
        rows = [
            {
                **result_row(result, self.lm, self.tokenizer, self.bans, self.params.search),
                "run_id": run_id,
                "model_id": self.model_id,
                "tokenizer_id": self.tokenizer_id,
                "target_role": self.roles[result.token_id],
                "device": str(self.lm.device),
            }
            for method, token_ids in by_method.items()
            for result in SEARCHES[method](self.lm, token_ids, self.bans, self.params.search, inits=self.inits, eval_chunk=self.params.eval_chunk)
        ]
        return bulk_insert(conn, PromptSearch.__table__, rows)

    def finish(self, _conn: Connection, _run_id: int, _params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        extra = {"prefix_ids": self.lm.prefix_ids, "suffix_ids": self.lm.suffix_ids, "resolved_targets": [[t.token_id, t.role] for t in self.targets]}
        # Below eval_chunk when out-of-memory forced smaller scoring batches (in this invocation).
        return 0, {**extra, "eval_batch_size_used": min(self.lm.eval_batch_sizes.values(), default=self.params.eval_chunk)}


def catalog_ban_rules(session: Session, model: Model, params: SearchParams, d_vocab: int, stats_run: int | None) -> BanRules:
    """Bans from the token table; the top tokens of the embedding_stats run ``stats_run`` count as anomalous.
    Padding rows stay banned like any row outside the tokenizer: no prompt a person types holds them."""
    tokens = select(Token.token_id, Token.text, Token.is_special).where(Token.tokenizer_id == model.tokenizer_id, in_tokenizer())
    rows = session.execute(tokens).all()
    anomalous = []
    if stats_run is not None:
        anomalous = list(session.scalars(select(top_anomalous_query(stats_run).limit(params.n_anomalous).subquery().c.token_id)))
    return ban_rules(
        {r.token_id: r.text for r in rows},
        [r.token_id for r in rows if r.is_special],
        anomalous,
        allow_anomalous=params.allow_anomalous,
        d_vocab=d_vocab,
    )


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
