"""Prompt search: find a prompt that makes a causal LM output a chosen token next.

Every prompt sits inside a fixed text frame (``SearchParams.frame``, by default a
"repeat the word" instruction) whose ``{prompt}`` slot holds the ``prompt_len``
optimised tokens; the target must be the next token after the whole frame. A
search starts from the target's text spelt with smaller tokens where the caller
gives such pieces (``inits``), repeated to fill the slot, otherwise from random
allowed tokens. Two searches per target token:

- ``gcg``: a discrete search over prompt token ids. The gradient of the target's
  loss with respect to one-hot inputs ranks, per position, the ``top_k`` token
  swaps that should lower the loss most; ``n_candidates`` single-swap prompts are
  then scored exactly in one batched forward. Success comes first: a candidate that
  makes the target the greedy next token is kept at once (the one with the widest
  margin), ending that target's search; otherwise the best candidate is kept if it
  beats the current prompt (by ``objective``: the target's log-prob by default, or
  its margin over the best other token). After ``patience`` steps without a better prompt the search
  restarts from random allowed tokens (the best prompt so far is kept). ``n_slots``
  targets are optimised at once; a target that succeeds (it becomes the greedy
  next token) or spends ``max_steps`` leaves its slot to the next target.
- ``continuous``: projected gradient descent in the PEZ style. Soft embeddings are
  optimised with Adam, but every forward runs on their projection to the nearest
  allowed tokens (cosine of centred embeddings, so the projection does not pull
  towards the few short-norm "hub" tokens near the centroid), with the gradient
  passed straight through to the soft embeddings. The best projected prompt
  (success first, then log-prob), which is a real token sequence, is the result; ``relaxed_logprob`` scores the
  final soft embeddings, an optimistic bound.

A prompt may not contain the target, any token whose text contains the target's
text (stripped of surrounding whitespace), special tokens, or ids the tokenizer
does not have; the catalog's most anomalous tokens are banned too unless
``allow_anomalous``.

Shapes follow TransformerLens conventions: [batch, pos, d_vocab] etc. Every
function runs on the model's device; the model may be float32 or bfloat16
(losses and scores are computed in float32).
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ingest.compute.batching import AdaptiveBatches

METHODS = ("gcg", "continuous")


# After this frame the next token is naturally a copy of the word the slot spells (measured in docs/prompts.md).
DEFAULT_FRAME = "Repeat the word.\nInput: apple\nOutput: apple\nInput: Gerald\nOutput: Gerald\nInput: _handler\nOutput: _handler\nInput:{prompt}\nOutput:"


@dataclass(frozen=True)
class SearchParams:
    """Hyperparameters of both searches; stored in the run's params JSON."""

    frame: str = DEFAULT_FRAME
    prompt_len: int = 6
    max_steps: int = 48  # gcg steps per target, restarts included
    patience: int = 8  # gcg steps without a better prompt before a restart from random tokens
    objective: str = "logprob"  # gcg keeps the candidate with the best 'logprob' or 'margin' (target logit minus the best other)
    top_k: int = 64
    n_candidates: int = 64
    n_slots: int = 16
    continuous_steps: int = 100
    continuous_lr: float = 1.0  # Adam step, in units of the embeddings' RMS coordinate (measured: docs/prompts.md)
    allow_anomalous: bool = False
    n_anomalous: int = 200
    seed: int = 0
    keep_trajectory: bool = True
    methods: tuple[str, ...] = METHODS

    def frame_parts(self) -> tuple[str, str]:
        """The frame's text before and after the optimised slot."""
        if self.frame.count("{prompt}") != 1:
            raise ValueError(f"the prompt frame must contain '{{prompt}}' exactly once: {self.frame!r}")
        before, after = self.frame.split("{prompt}")
        return before, after


@dataclass
class SearchResult:
    """Outcome of one search for one target: the best prompt and how well it does."""

    token_id: int
    method: str
    prompt_ids: list[int]
    logprob: float
    rank: int
    margin: float
    steps: int
    n_evaluations: int
    seconds: float
    seed: int
    n_banned: int
    restarts: int = 0
    relaxed_logprob: float | None = None
    trajectory: list[float] | None = None


@dataclass(frozen=True)
class Scores:
    """How a target fares as the next token.  All [batch]."""

    logprob: Tensor
    rank: Tensor  # 1 = the greedy next token
    margin: Tensor  # target logit minus the best other logit; > 0 iff greedy


# --- the model as a function of prompt embeddings ------------------------------------


class PromptLM:
    """A causal LM seen as: prompt embeddings [batch, pos, d_model] -> next-token logits [batch, d_vocab].

    ``table`` holds what the input-embedding module outputs for every id, so
    models that scale embeddings inside that module (Gemma3) get the same
    ``inputs_embeds`` as from ``input_ids``. ``prefix_ids`` (BOS where the
    tokenizer adds one, then the frame's text before the slot) precede every
    prompt and ``suffix_ids`` (the frame's text after it) follow; neither is optimised.
    """

    def __init__(
        self, model: torch.nn.Module, prefix_ids: Sequence[int], device: str | torch.device = "cpu", suffix_ids: Sequence[int] = ()
    ):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.prefix_ids = list(prefix_ids)
        self.suffix_ids = list(suffix_ids)
        embedding = model.get_input_embeddings()
        with torch.no_grad():
            self.table = embedding(torch.arange(embedding.num_embeddings, device=self.device))  # [d_vocab, d_model]
            self.prefix = self.table[self.prefix_ids]  # [prefix, d_model]
            self.suffix = self.table[self.suffix_ids]  # [suffix, d_model]
            # The prefix is the same for every prompt: its keys and values are computed once.
            self._prefix_cache = self.model(inputs_embeds=self.prefix[None], use_cache=True, logits_to_keep=1).cache if self.prefix_ids else None
        self.dtype = self.table.dtype
        self._eval_batches: dict[int, AdaptiveBatches] = {}  # per requested chunk; shrinks on out-of-memory and stays shrunk

    @property
    def d_vocab(self) -> int:
        return self.table.shape[0]

    def next_logits(self, embeds: Tensor) -> Tensor:
        """embeds [batch, pos, d_model] -> float32 logits of the token after the framed prompt [batch, d_vocab]."""
        batch = embeds.shape[0]
        rest = torch.cat([embeds.to(self.dtype), self.suffix.expand(batch, -1, -1)], dim=1)  # [batch, pos + suffix, d_model]
        out = self.model(inputs_embeds=rest, cache=self._prefix_cache_for(batch), logits_to_keep=1, use_cache=True)
        return out.logits[:, -1].float()

    @property
    def eval_batch_sizes(self) -> dict[int, int]:
        """Prompts per forward that each requested chunk size ended at (smaller after out-of-memory)."""
        return {chunk: batches.batch_size for chunk, batches in self._eval_batches.items()}


    def _prefix_cache_for(self, batch: int) -> Any:
        if self._prefix_cache is None:
            return None
        cache = copy.deepcopy(self._prefix_cache)  # the forward appends the prompt's keys to it
        cache.batch_repeat_interleave(batch)
        return cache

    @torch.no_grad()
    def score_ids(self, prompt_ids: Tensor, targets: Tensor, chunk: int) -> Scores:
        """Exact scores of prompts [batch, pos] for targets [batch], at most ``chunk`` prompts per forward (fewer after out-of-memory)."""
        batches = self._eval_batches.setdefault(chunk, AdaptiveBatches(chunk, self.device))
        parts = batches.map(
            lambda rows: [score_targets(self.next_logits(self.table[prompt_ids[rows.start : rows.stop]]), targets[rows.start : rows.stop])],
            range(len(prompt_ids)),
        )
        return Scores(*(torch.cat([getattr(p, name) for p in parts]) for name in ("logprob", "rank", "margin")))

    def framed_ids(self, prompt_ids: Tensor) -> Tensor:
        """prompt_ids [batch, pos] -> the ids the model reads [batch, prefix + pos + suffix]."""
        batch = prompt_ids.shape[0]
        prefix = torch.tensor(self.prefix_ids, dtype=torch.long, device=self.device).expand(batch, -1)
        suffix = torch.tensor(self.suffix_ids, dtype=torch.long, device=self.device).expand(batch, -1)
        return torch.cat([prefix, prompt_ids.to(self.device), suffix], dim=1)

    @torch.no_grad()
    def greedy_next_ids(self, prompt_ids: Tensor) -> Tensor:
        """Greedy next token [batch] through the model's own ``input_ids`` path (an independent check of ``table``)."""
        out = self.model(input_ids=self.framed_ids(prompt_ids), logits_to_keep=1, use_cache=False)
        return out.logits[:, -1].argmax(-1)


def score_targets(logits: Tensor, targets: Tensor) -> Scores:
    """logits [batch, d_vocab], targets [batch] -> Scores."""
    target_logit = logits.gather(1, targets[:, None])  # [batch, 1]
    logprob = logits.log_softmax(-1).gather(1, targets[:, None])[:, 0]
    rank = (logits > target_logit).sum(-1) + 1
    best_other = logits.scatter(1, targets[:, None], float("-inf")).amax(-1)
    return Scores(logprob, rank, target_logit[:, 0] - best_other)


# --- bans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BanRules:
    """What no prompt may contain.

    texts: decoded text of every id, '' where the tokenizer has no token ([d_vocab]).
    always_banned: [d_vocab] bool, banned whatever the target.
    """

    texts: np.ndarray
    always_banned: Tensor

    def masks(self, target_ids: Sequence[int]) -> Tensor:
        """Banned ids per target [n_targets, d_vocab] (bool, on CPU)."""
        rows = [torch.from_numpy(self._containing(self.texts[t])) for t in target_ids]  # a loop over targets; each is vectorised over the vocabulary
        masks = torch.stack(rows) | self.always_banned
        masks[torch.arange(len(target_ids)), torch.tensor(list(target_ids), dtype=torch.long)] = True
        return masks

    def _containing(self, target_text: str) -> np.ndarray:
        # ' cat' also bans 'cat', 'cats' and ' Scat...'; a whitespace-only target keeps its whitespace.
        needle = target_text.strip() or target_text
        if not needle:
            return np.zeros(len(self.texts), dtype=bool)
        return np.char.find(self.texts, needle) >= 0


def ban_rules(
    texts_by_id: dict[int, str], special_ids: Sequence[int], anomalous_ids: Sequence[int], *, allow_anomalous: bool, d_vocab: int
) -> BanRules:
    """Bans for a vocabulary of ``d_vocab`` embedding rows, given the tokenizer's ids and their texts."""
    texts = np.full(d_vocab, "", dtype=object)
    ids = np.fromiter(texts_by_id.keys(), dtype=np.int64, count=len(texts_by_id))
    texts[ids] = list(texts_by_id.values())
    banned = torch.ones(d_vocab, dtype=torch.bool)
    banned[torch.from_numpy(ids)] = False
    banned[torch.tensor(list(special_ids), dtype=torch.long)] = True
    if not allow_anomalous:
        banned[torch.tensor(list(anomalous_ids), dtype=torch.long)] = True
    return BanRules(texts.astype(np.str_), banned)


# --- GCG -----------------------------------------------------------------------------


def target_seed(seed: int, token_id: int) -> int:
    """Per-target seed: a target's search does not depend on which others share its batch."""
    return seed * 1_000_003 + token_id


def random_allowed_ids(banned: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n ids drawn uniformly from the ids not banned ([d_vocab] bool) -> [n]."""
    allowed = (~banned).nonzero()[:, 0]
    return allowed[torch.randint(len(allowed), (n,), generator=generator).to(allowed.device)]


def initial_prompt(pieces: Sequence[int], banned: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """The start of a search [n]: ``pieces`` repeated to fill the slot (ending on a whole copy), or random allowed ids without pieces."""
    usable = [i for i in pieces if not banned[i]]
    if not usable:
        return random_allowed_ids(banned, n, generator)
    copies = -(-n // len(usable))  # ceiling division
    return torch.tensor((usable * copies)[-n:], dtype=torch.long, device=banned.device)


def token_gradients(lm: PromptLM, prompt_ids: Tensor, targets: Tensor) -> tuple[Tensor, Scores]:
    """Gradient of each target's loss w.r.t. one-hot prompts, and the prompts' current scores.

    prompt_ids [batch, pos], targets [batch] -> grad [batch, pos, d_vocab], Scores.
    """
    one_hot = F.one_hot(prompt_ids, lm.d_vocab).to(lm.dtype).requires_grad_()  # [batch, pos, d_vocab]
    logits = lm.next_logits(one_hot @ lm.table)
    loss = F.cross_entropy(logits, targets, reduction="sum")  # targets are independent: the sum keeps their gradients apart
    (grad,) = torch.autograd.grad(loss, one_hot)
    return grad.float(), score_targets(logits.detach(), targets)


def sample_candidates(prompt_ids: Tensor, top_ids: Tensor, n: int, generators: Sequence[torch.Generator]) -> Tensor:
    """Single-swap candidates: prompts [batch, pos], top_ids [batch, pos, k] -> [batch, n, pos].

    Each candidate replaces one uniformly chosen position by one of its top-k swaps.
    """
    batch, pos, k = top_ids.shape
    draws = torch.stack([torch.randint(pos * k, (n,), generator=g) for g in generators]).to(prompt_ids.device)  # [batch, n]
    position, choice = draws // k, draws % k
    swaps = top_ids[torch.arange(batch, device=prompt_ids.device)[:, None], position, choice]  # [batch, n]
    candidates = prompt_ids[:, None, :].repeat(1, n, 1)
    candidates.scatter_(2, position[:, :, None], swaps[:, :, None])
    return candidates


# Smaller gains are float noise between batch shapes, not progress.
IMPROVEMENT = 1e-4
# Where each objective sits in a (logprob, rank, margin) tuple.
OBJECTIVES = {"logprob": 0, "margin": 2}


@dataclass
class _Slot:
    """One target being optimised: its current prompt, the best prompt of all its restarts, and its bookkeeping."""

    token_id: int
    banned: Tensor  # [d_vocab]
    generator: torch.Generator
    seed: int
    prompt_ids: Tensor  # [pos]: the current restart's prompt
    best_ids: Tensor  # [pos]: the best prompt over all restarts
    objective: int  # index of the compared score in (logprob, rank, margin)
    score: float = float("-inf")  # objective of prompt_ids
    best: tuple[float, int, float] = (float("-inf"), 0, float("-inf"))  # logprob, rank, margin of best_ids
    steps: int = 0
    stale: int = 0  # steps since the current restart last improved
    restarts: int = 0
    n_evaluations: int = 0
    started: float = field(default_factory=time.perf_counter)
    trajectory: list[float] = field(default_factory=list)

    def record(self, prompt_ids: Tensor, scores: tuple[float, int, float]) -> None:
        """Make ``prompt_ids`` (with these logprob, rank, margin) the current prompt, and the best one if it beats it."""
        score = scores[self.objective]
        if score > self.score + IMPROVEMENT:
            self.stale = 0
        self.prompt_ids, self.score = prompt_ids, score
        if self.key(scores) > self.key(self.best):
            self.best_ids, self.best = prompt_ids, scores

    def key(self, scores: tuple[float, int, float]) -> tuple[bool, float]:
        """Order of prompts: success (the target is the greedy next token) first, then the objective."""
        return scores[1] == 1, scores[self.objective]

    @property
    def succeeded(self) -> bool:
        return self.best[1] == 1

    def restart(self, prompt_len: int) -> None:
        self.prompt_ids = random_allowed_ids(self.banned, prompt_len, self.generator)
        self.score = float("-inf")
        self.stale = 0
        self.restarts += 1

    def result(self, params: SearchParams) -> SearchResult:
        logprob, rank, margin = self.best
        return SearchResult(
            token_id=self.token_id,
            method="gcg",
            prompt_ids=self.best_ids.tolist(),
            logprob=logprob,
            rank=rank,
            margin=margin,
            steps=self.steps,
            n_evaluations=self.n_evaluations,
            seconds=time.perf_counter() - self.started,
            seed=self.seed,
            n_banned=int(self.banned.sum()),
            restarts=self.restarts,
            trajectory=self.trajectory if params.keep_trajectory else None,
        )


def _new_slot(token_id: int, banned: Tensor, pieces: Sequence[int], params: SearchParams, device: torch.device) -> _Slot:
    seed = target_seed(params.seed, token_id)
    generator = torch.Generator().manual_seed(seed)
    banned = banned.to(device)
    prompt = initial_prompt(pieces, banned, params.prompt_len, generator)
    return _Slot(token_id, banned, generator, seed, prompt, prompt, OBJECTIVES[params.objective])


def gcg_search(
    lm: PromptLM,
    target_ids: Sequence[int],
    bans: BanRules,
    params: SearchParams,
    *,
    inits: Mapping[int, Sequence[int]] | None = None,
    eval_chunk: int = 512,
) -> Iterator[SearchResult]:
    """Greedy coordinate gradient search for every target, ``n_slots`` at a time; yields each result as it finishes.

    ``inits`` maps a target to the token pieces its first start repeats (see :func:`initial_prompt`).
    """
    inits = inits or {}
    queue = deque(zip(target_ids, bans.masks(target_ids)))
    slots: list[_Slot] = []
    while queue or slots:
        while queue and len(slots) < params.n_slots:
            token_id, banned = queue.popleft()
            slots.append(_new_slot(token_id, banned, inits.get(token_id, ()), params, lm.device))
        yield from _gcg_step(lm, slots, params, eval_chunk)


def success_first(objective: Tensor, rank: Tensor, margin: Tensor) -> Tensor:
    """The candidate each target keeps: objective, rank, margin [slot, n] -> index [slot].

    A target's best-objective candidate need not be its greedy one (a flatter
    distribution can lower the target's log-prob yet drop the one token above
    it); a candidate that succeeds is worth more than any log-prob, so among
    those, the widest margin wins.
    """
    succeeded = rank == 1
    widest = margin.masked_fill(~succeeded, float("-inf")).argmax(-1)
    return torch.where(succeeded.any(-1), widest, objective.argmax(-1))


def _gcg_step(lm: PromptLM, slots: list[_Slot], params: SearchParams, eval_chunk: int) -> Iterator[SearchResult]:
    """One step for every slot; finished slots are removed from ``slots`` and their results yielded."""
    prompts = torch.stack([s.prompt_ids for s in slots])  # [slot, pos]
    targets = torch.tensor([s.token_id for s in slots], device=lm.device)
    grad, current = token_gradients(lm, prompts, targets)
    grad.masked_fill_(torch.stack([s.banned for s in slots])[:, None, :], float("inf"))
    top_ids = (-grad).topk(params.top_k, dim=-1).indices  # [slot, pos, k]: swaps that lower the loss most
    candidates = sample_candidates(prompts, top_ids, params.n_candidates, [s.generator for s in slots])
    n = params.n_candidates
    scores = lm.score_ids(candidates.flatten(0, 1), targets.repeat_interleave(n), eval_chunk)
    best = success_first(getattr(scores, params.objective).view(len(slots), n), scores.rank.view(len(slots), n), scores.margin.view(len(slots), n))
    flat_best = torch.arange(len(slots), device=lm.device) * n + best
    # One transfer of the few numbers the bookkeeping needs (a sync per number is slow on a GPU).
    now = list(zip(current.logprob.tolist(), current.rank.tolist(), current.margin.tolist()))
    top = list(zip(scores.logprob[flat_best].tolist(), scores.rank[flat_best].tolist(), scores.margin[flat_best].tolist()))
    finished = []
    for i, slot in enumerate(slots):
        slot.steps += 1
        slot.stale += 1
        slot.n_evaluations += n + 1
        slot.record(slot.prompt_ids, now[i])
        if slot.key(top[i]) > slot.key(now[i]):
            slot.record(candidates[i, best[i]], top[i])
        slot.trajectory.append(-slot.best[slot.objective])  # the best so far: restarts do not show as rises
        if slot.succeeded or slot.steps >= params.max_steps:
            finished.append(slot)
        elif slot.stale >= params.patience:
            slot.restart(params.prompt_len)
    for slot in finished:
        slots.remove(slot)
        yield slot.result(params)


# --- continuous (projected gradient) ------------------------------------------------


def beats(logprob: Tensor, succeeded: Tensor, best_logprob: Tensor, best_succeeded: Tensor) -> Tensor:
    """Whether each new prompt beats the best so far: success first, then log-prob (as GCG keeps candidates).  All [batch]."""
    return (succeeded & ~best_succeeded) | ((succeeded == best_succeeded) & (logprob > best_logprob))


def projection_basis(table: Tensor) -> tuple[Tensor, Tensor]:
    """Centroid [d_model] and unit-norm centred token embeddings [d_vocab, d_model] (float32) for :func:`project`."""
    centroid = table.mean(0)
    return centroid, F.normalize(table - centroid, dim=-1)


def project(embeds: Tensor, centroid: Tensor, unit_rows: Tensor, banned: Tensor) -> Tensor:
    """Nearest allowed token by cosine around the centroid: embeds [batch, pos, d_model], banned [batch, d_vocab] -> ids [batch, pos].

    Cosine rather than L2: a soft vector drifting towards the centroid would be
    L2-nearest to the few short-norm tokens there, the same "hub" words for every target.
    """
    cosine = F.normalize(embeds - centroid, dim=-1) @ unit_rows.T  # [batch, pos, d_vocab]
    return cosine.masked_fill(banned[:, None, :], float("-inf")).argmax(-1)


def continuous_search(
    lm: PromptLM,
    target_ids: Sequence[int],
    bans: BanRules,
    params: SearchParams,
    *,
    inits: Mapping[int, Sequence[int]] | None = None,
    eval_chunk: int = 512,
) -> Iterator[SearchResult]:
    """Projected gradient descent on prompt embeddings (PEZ style), ``n_slots`` targets per batch."""
    inits = inits or {}
    basis = projection_basis(lm.table.float())
    for start in range(0, len(target_ids), params.n_slots):
        batch = list(target_ids[start : start + params.n_slots])
        yield from _continuous_batch(lm, batch, bans, params, inits, basis, eval_chunk)


def _continuous_batch(
    lm: PromptLM,
    target_ids: list[int],
    bans: BanRules,
    params: SearchParams,
    inits: Mapping[int, Sequence[int]],
    basis: tuple[Tensor, Tensor],
    eval_chunk: int,
) -> Iterator[SearchResult]:
    started = time.perf_counter()
    banned = bans.masks(target_ids).to(lm.device)  # [batch, d_vocab]
    targets = torch.tensor(target_ids, device=lm.device)
    seeds = [target_seed(params.seed, t) for t in target_ids]
    start_ids = torch.stack(
        [initial_prompt(inits.get(t, ()), b, params.prompt_len, torch.Generator().manual_seed(s)) for t, b, s in zip(target_ids, banned, seeds)]
    )  # [batch, pos]
    table = lm.table.float()  # [d_vocab, d_model]
    rms_coordinate = table.pow(2).mean().sqrt().item()  # step size relative to the embeddings' own scale
    soft = table[start_ids].clone().requires_grad_()  # [batch, pos, d_model]
    optimizer = torch.optim.Adam([soft], lr=params.continuous_lr * rms_coordinate)
    best_logprob = torch.full((len(target_ids),), float("-inf"), device=lm.device)
    best_succeeded = torch.zeros(len(target_ids), dtype=torch.bool, device=lm.device)
    best_ids = start_ids.clone()
    trajectory = []
    for _ in range(params.continuous_steps):
        ids = project(soft.detach(), *basis, banned)  # [batch, pos]
        hard = table[ids]
        logits = lm.next_logits(soft + (hard - soft).detach())  # forward at the tokens, gradient straight through to soft
        ce = F.cross_entropy(logits, targets, reduction="none")  # [batch]
        (soft.grad,) = torch.autograd.grad(ce.sum(), soft)  # not .backward(): the model's own .grad stays untouched
        optimizer.step()
        step = score_targets(logits.detach(), targets)
        improved = beats(step.logprob, step.rank == 1, best_logprob, best_succeeded)
        best_logprob = torch.where(improved, step.logprob, best_logprob)
        best_succeeded |= improved & (step.rank == 1)
        best_ids[improved] = ids[improved]
        trajectory.append(ce.detach())
    with torch.no_grad():
        relaxed = score_targets(lm.next_logits(soft), targets)
    scores = lm.score_ids(best_ids, targets, eval_chunk)  # the kept prompts, re-scored as token ids
    losses = torch.stack(trajectory, 1).tolist() if trajectory else [[] for _ in target_ids]  # [batch, steps]
    seconds = time.perf_counter() - started
    for i, token_id in enumerate(target_ids):
        yield SearchResult(
            token_id=token_id,
            method="continuous",
            prompt_ids=best_ids[i].tolist(),
            logprob=float(scores.logprob[i]),
            rank=int(scores.rank[i]),
            margin=float(scores.margin[i]),
            steps=params.continuous_steps,
            n_evaluations=params.continuous_steps + 2,
            seconds=seconds,
            seed=seeds[i],
            n_banned=int(banned[i].sum()),
            relaxed_logprob=float(relaxed.logprob[i]),
            trajectory=losses[i] if params.keep_trajectory else None,
        )


SEARCHES = {"gcg": gcg_search, "continuous": continuous_search}
