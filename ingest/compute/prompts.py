"""Prompt search: find a prompt that makes a causal LM output a chosen token next.

Two searches per target token (the SolidGoldMagikarp study's prompt generation):

- ``gcg``: a discrete search over prompt token ids. The gradient of the target's
  loss with respect to one-hot inputs ranks, per position, the ``top_k`` token
  swaps that should lower the loss most; ``n_candidates`` single-swap prompts are
  then scored exactly in one batched forward and the best is kept if it beats the
  current prompt. ``n_slots`` targets are optimised at once; a target that
  succeeds (it becomes the greedy next token) or spends ``max_steps`` leaves its
  slot to the next target in the queue.
- ``continuous``: a diagnostic that optimises the prompt's input embeddings
  directly, penalised by their distance to the nearest allowed token embedding,
  then snaps each position to that token. Its un-snapped log-prob
  (``relaxed_logprob``) is an optimistic bound on what real tokens can reach.

A prompt may not contain the target, any token whose text contains the target's
text (stripped of surrounding whitespace), special tokens, or ids the tokenizer
does not have; the catalog's most anomalous tokens are banned too unless
``allow_anomalous``.

Shapes follow TransformerLens conventions: [batch, pos, d_vocab] etc. Every
function runs on the model's device; the model may be float32 or bfloat16
(losses and scores are computed in float32).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ingest.compute.batching import AdaptiveBatches

METHODS = ("gcg", "continuous")


@dataclass(frozen=True)
class SearchParams:
    """Hyperparameters of both searches; stored in the run's params JSON."""

    prompt_len: int = 8
    max_steps: int = 64
    top_k: int = 64
    n_candidates: int = 128
    n_slots: int = 16
    continuous_steps: int = 100
    continuous_lr: float = 0.05  # Adam step, in units of the embeddings' RMS coordinate
    snap_penalty: float = 1.0
    continuous_init_spread: float = 0.1  # start at centroid + spread * (random token - centroid)
    allow_anomalous: bool = False
    n_anomalous: int = 200
    seed: int = 0
    keep_trajectory: bool = True
    methods: tuple[str, ...] = METHODS


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
    tokenizer adds one) precede every prompt and are never optimised.
    """

    def __init__(self, model: torch.nn.Module, prefix_ids: Sequence[int], device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.prefix_ids = list(prefix_ids)
        embedding = model.get_input_embeddings()
        with torch.no_grad():
            self.table = embedding(torch.arange(embedding.num_embeddings, device=self.device))  # [d_vocab, d_model]
            self.prefix = embedding(torch.tensor(self.prefix_ids, dtype=torch.long, device=self.device))  # [prefix, d_model]
        self.dtype = self.table.dtype
        self._eval_batches: dict[int, AdaptiveBatches] = {}  # per requested chunk; shrinks on out-of-memory and stays shrunk

    @property
    def d_vocab(self) -> int:
        return self.table.shape[0]

    def next_logits(self, embeds: Tensor) -> Tensor:
        """embeds [batch, pos, d_model] -> float32 logits of the token after the prompt [batch, d_vocab]."""
        prefix = self.prefix.expand(embeds.shape[0], -1, -1)
        out = self.model(inputs_embeds=torch.cat([prefix, embeds.to(self.dtype)], dim=1), logits_to_keep=1, use_cache=False)
        return out.logits[:, -1].float()

    @property
    def eval_batch_sizes(self) -> dict[int, int]:
        """Prompts per forward that each requested chunk size ended at (smaller after out-of-memory)."""
        return {chunk: batches.batch_size for chunk, batches in self._eval_batches.items()}

    @torch.no_grad()
    def score_ids(self, prompt_ids: Tensor, targets: Tensor, chunk: int) -> Scores:
        """Exact scores of prompts [batch, pos] for targets [batch], at most ``chunk`` prompts per forward (fewer after out-of-memory)."""
        batches = self._eval_batches.setdefault(chunk, AdaptiveBatches(chunk, self.device))
        parts = batches.map(
            lambda rows: [score_targets(self.next_logits(self.table[prompt_ids[rows.start : rows.stop]]), targets[rows.start : rows.stop])],
            range(len(prompt_ids)),
        )
        return Scores(*(torch.cat([getattr(p, name) for p in parts]) for name in ("logprob", "rank", "margin")))

    @torch.no_grad()
    def greedy_next_ids(self, prompt_ids: Tensor) -> Tensor:
        """Greedy next token [batch] through the model's own ``input_ids`` path (an independent check of ``table``)."""
        prefix = torch.tensor(self.prefix_ids, dtype=torch.long, device=self.device).expand(prompt_ids.shape[0], -1)
        out = self.model(input_ids=torch.cat([prefix, prompt_ids.to(self.device)], dim=1), logits_to_keep=1, use_cache=False)
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
    return allowed[torch.randint(len(allowed), (n,), generator=generator)]


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


@dataclass
class _Slot:
    """One target being optimised: its current best prompt and its bookkeeping."""

    token_id: int
    banned: Tensor  # [d_vocab]
    generator: torch.Generator
    seed: int
    prompt_ids: Tensor  # [pos]
    logprob: float = float("-inf")
    rank: int = 0
    margin: float = float("-inf")
    steps: int = 0
    n_evaluations: int = 0
    started: float = field(default_factory=time.perf_counter)
    trajectory: list[float] = field(default_factory=list)

    def result(self, params: SearchParams) -> SearchResult:
        return SearchResult(
            token_id=self.token_id,
            method="gcg",
            prompt_ids=self.prompt_ids.tolist(),
            logprob=self.logprob,
            rank=self.rank,
            margin=self.margin,
            steps=self.steps,
            n_evaluations=self.n_evaluations,
            seconds=time.perf_counter() - self.started,
            seed=self.seed,
            n_banned=int(self.banned.sum()),
            trajectory=self.trajectory if params.keep_trajectory else None,
        )


def _new_slot(token_id: int, banned: Tensor, params: SearchParams, device: torch.device) -> _Slot:
    seed = target_seed(params.seed, token_id)
    generator = torch.Generator().manual_seed(seed)
    prompt = random_allowed_ids(banned, params.prompt_len, generator).to(device)
    return _Slot(token_id, banned.to(device), generator, seed, prompt)


def gcg_search(lm: PromptLM, target_ids: Sequence[int], bans: BanRules, params: SearchParams, *, eval_chunk: int = 512) -> Iterator[SearchResult]:
    """Greedy coordinate gradient search for every target, ``n_slots`` at a time; yields each result as it finishes."""
    queue = deque(zip(target_ids, bans.masks(target_ids)))
    slots: list[_Slot] = []
    while queue or slots:
        while queue and len(slots) < params.n_slots:
            token_id, banned = queue.popleft()
            slots.append(_new_slot(token_id, banned, params, lm.device))
        yield from _gcg_step(lm, slots, params, eval_chunk)


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
    best = scores.logprob.view(len(slots), n).argmax(-1)  # [slot]
    flat_best = torch.arange(len(slots), device=lm.device) * n + best
    # One transfer of the few numbers the bookkeeping needs (a sync per number is slow on a GPU).
    now = list(zip(current.logprob.tolist(), current.rank.tolist(), current.margin.tolist()))
    top = list(zip(scores.logprob[flat_best].tolist(), scores.rank[flat_best].tolist(), scores.margin[flat_best].tolist()))
    finished = []
    for i, slot in enumerate(slots):
        slot.steps += 1
        slot.n_evaluations += n + 1
        slot.logprob, slot.rank, slot.margin = now[i]
        if top[i][0] > slot.logprob:
            slot.prompt_ids = candidates[i, best[i]]
            slot.logprob, slot.rank, slot.margin = top[i]
        slot.trajectory.append(-slot.logprob)
        if slot.rank == 1 or slot.steps >= params.max_steps:
            finished.append(slot)
    for slot in finished:
        slots.remove(slot)
        yield slot.result(params)


# --- continuous diagnostic -----------------------------------------------------------


def nearest_allowed(embeds: Tensor, table: Tensor, banned: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distance to, and id of, the nearest allowed token embedding.

    embeds [batch, pos, d_model], table [d_vocab, d_model] (both float32), banned [batch, d_vocab] -> ([batch, pos], [batch, pos]).
    """
    d2 = (embeds**2).sum(-1, keepdim=True) - 2 * embeds @ table.T + (table**2).sum(-1)  # [batch, pos, d_vocab]
    return d2.masked_fill(banned[:, None, :], float("inf")).min(-1)


def continuous_search(lm: PromptLM, target_ids: Sequence[int], bans: BanRules, params: SearchParams, *, eval_chunk: int = 512) -> Iterator[SearchResult]:
    """Optimise prompt embeddings with a nearest-token penalty, then snap; ``n_slots`` targets per batch."""
    for start in range(0, len(target_ids), params.n_slots):
        yield from _continuous_batch(lm, list(target_ids[start : start + params.n_slots]), bans, params, eval_chunk)


def _continuous_batch(lm: PromptLM, target_ids: list[int], bans: BanRules, params: SearchParams, eval_chunk: int) -> Iterator[SearchResult]:
    started = time.perf_counter()
    banned = bans.masks(target_ids).to(lm.device)  # [batch, d_vocab]
    targets = torch.tensor(target_ids, device=lm.device)
    seeds = [target_seed(params.seed, t) for t in target_ids]
    init = torch.stack([random_allowed_ids(b, params.prompt_len, torch.Generator().manual_seed(s)) for b, s in zip(banned.cpu(), seeds)])
    table = lm.table.float()  # [d_vocab, d_model]; distances in float32 whatever the model's dtype
    # Step and penalty are relative to the embeddings' own scale, so one setting suits every model.
    unit = (table**2).sum(-1).mean()  # mean squared token norm
    rms_coordinate = (unit / table.shape[1]).sqrt().item()
    # Starting near the centroid rather than on tokens: from a token, the optimum stays in that token's
    # neighbourhood and snapping just returns the random start (measured on SmolLM2, docs/prompts.md).
    centroid = table.mean(0)
    embeds = (centroid + params.continuous_init_spread * (table[init.to(lm.device)] - centroid)).requires_grad_()  # [batch, pos, d_model]
    optimizer = torch.optim.Adam([embeds], lr=params.continuous_lr * rms_coordinate)
    trajectory = []
    for _ in range(params.continuous_steps):
        ce = F.cross_entropy(lm.next_logits(embeds), targets, reduction="none")  # [batch]
        distance, _ = nearest_allowed(embeds, table, banned)
        loss = (ce + params.snap_penalty * distance.mean(-1) / unit).sum()
        (embeds.grad,) = torch.autograd.grad(loss, embeds)  # not .backward(): the model's own .grad stays untouched
        optimizer.step()
        trajectory.append(ce.detach())
    with torch.no_grad():
        relaxed = score_targets(lm.next_logits(embeds), targets)
        _, snapped = nearest_allowed(embeds, table, banned)
        scores = lm.score_ids(snapped, targets, eval_chunk)
    losses = torch.stack(trajectory, 1).tolist() if trajectory else [[] for _ in target_ids]  # [batch, steps]
    seconds = time.perf_counter() - started
    for i, token_id in enumerate(target_ids):
        yield SearchResult(
            token_id=token_id,
            method="continuous",
            prompt_ids=snapped[i].tolist(),
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
