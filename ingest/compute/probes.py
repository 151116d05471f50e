"""Behavioural probes: ask a model to repeat, explain, spell or continue a token.

The token goes into the prompt *by id* at each «TOKEN» placeholder, so tokens
that encoding text never produces (unreachable ones) are probed too. Two ways to
run a batch of probes, with the same result record:

- :func:`generate_probes` (candidate mode): any mix of templates in one batch,
  left-padded with an attention mask, greedy ``generate`` of each template's
  ``max_new_tokens``; the target token's probability and rank are read from the
  logits of the first ``positions`` generated steps;
- :func:`sweep_probes` (sweep mode, meant for a GPU over a whole vocabulary):
  one template per batch, so every prompt has the same length; the KV cache of
  the shared text before the first placeholder is computed once and expanded to
  the batch, only last-position logits are computed for up to ``positions``
  greedy steps, and a row whose verdict is settled stops stepping.

Shapes: ``batch`` probes, ``pos`` prompt positions, ``d_vocab`` logits.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from catalog.database import CatalogError
from ingest.compute.batching import AdaptiveBatches

PLACEHOLDER = "«TOKEN»"
NO_CHAT_TEMPLATE = "Question: {text}\nAnswer: {prefix}"


@dataclass(frozen=True)
class Template:
    """A probe prompt; bump ``version`` whenever a field that changes the prompt or output changes."""

    name: str
    version: int
    kind: str
    chat: bool
    text: str
    response_prefix: str
    max_new_tokens: int
    description: str

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


# The placeholder follows ':' or ',' with no space, so a token's own leading space
# (byte-level 'Ġcat', sentencepiece '▁cat') reads naturally and the echo slot looks
# exactly like the input slot.
TEMPLATES: tuple[Template, ...] = (
    Template(
        "repeat_chat", 1, "repeat", True,
        "Please repeat the following text exactly.\nText:«TOKEN»", "Text:", 12,
        "Chat-template request to repeat the token; the answer is primed up to the slot.",
    ),
    Template(
        "echo_fewshot", 1, "repeat", False,
        "Input: apple\nOutput: apple\nInput: river\nOutput: river\nInput:«TOKEN»\nOutput:", "", 12,
        "Few-shot echo: two input/output pairs, then the token.",
    ),
    Template(
        "meaning", 1, "meaning", True,
        "What does the following text mean?\nText:«TOKEN»", "You asked about:", 12,
        "'What does X mean': the answer should name the token before explaining it.",
    ),
    Template(
        "spell", 1, "spell", True,
        "Spell out the following text letter by letter.\nText:«TOKEN»", "Letter by letter:", 16,
        "Spell the token out; passes when the output's letters start with the token's.",
    ),
    Template(
        "continue_list", 1, "continue", False,
        "Repeated:«TOKEN»,«TOKEN»,«TOKEN»,", "", 12,
        "Plain continuation (no instruction) of a comma-separated repetition of the token.",
    ),
)

# Magikarp-compatible verification (Land & Bartolo 2024, cohere-ai/magikarp): their three prompts, token
# inserted by id at every slot, three greedy tokens, verified when the target's probability stays below
# 0.01 in all three, so counts compare with their published tables. The prompts' wording is theirs.
MAGIKARP_ECHO_PAIR = "\nInput: ««TOKEN»»\nOutput: ««TOKEN»»"
MAGIKARP_TEMPLATES: tuple[Template, ...] = (
    Template(
        "magikarp_input_output", 1, "repeat", False,
        "This device repeats its input exactly, as shown in these 100 identical trials."
        + MAGIKARP_ECHO_PAIR * 20 + "\nInput: ««TOKEN»»\nOutput: «", "", 3,
        "Magikarp's 20-shot echo: the token as input and output twenty times, then as input.",
    ),
    Template(
        "magikarp_assistant_explain", 1, "meaning", False,
        "This helpful assistant explains what a phrase means, replying with identical responses to identical questions for reliability."
        "\nUser: What does 'edslfkj' mean?\nAssistant: 'edslfkj' has no specific meaning I am aware of."
        "\nUser: what does '«TOKEN»' mean?\nAssistant: '", "", 3,
        "Magikarp's 'what does X mean', after one worked example; the answer opens by quoting the token.",
    ),
    Template(
        "magikarp_repeats", 1, "continue", False,
        "Below is the output, as you can see it's just giving the same phrase repeated indefinitely:\n" + PLACEHOLDER * 101, "", 3,
        "Magikarp's repetition: the token 101 times in a row, to be continued.",
    ),
)
TEMPLATES_BY_NAME = {t.name: t for t in TEMPLATES + MAGIKARP_TEMPLATES}
SWEEP_TEMPLATES = ("echo_fewshot", "continue_list")
# Named template sets (`glitchdex probe --template-set`): the default candidate set, the sweep set, Magikarp's.
TEMPLATE_SETS = {
    "default": tuple(t.name for t in TEMPLATES),
    "sweep": SWEEP_TEMPLATES,
    "magikarp": tuple(t.name for t in MAGIKARP_TEMPLATES),
}


def templates_named(names: Sequence[str]) -> list[Template]:
    unknown = [n for n in names if n not in TEMPLATES_BY_NAME]
    if unknown:
        raise CatalogError(f"unknown probe template(s) {', '.join(unknown)}; known: {', '.join(TEMPLATES_BY_NAME)}")
    return [TEMPLATES_BY_NAME[n] for n in names]


@dataclass(frozen=True)
class Prompt:
    """A template rendered for one model: token ids between the placeholders."""

    template: Template
    rendered: str
    segments: tuple[tuple[int, ...], ...]  # n_placeholders + 1 id runs

    @property
    def prefix(self) -> list[int]:
        """Ids before the first placeholder: the same for every token, so sweeps cache them."""
        return list(self.segments[0])

    def tail_ids(self, token_ids: Tensor) -> Tensor:
        """Ids from the first placeholder on, the token filled in.  [batch] -> [batch, tail_len]."""
        columns = []
        for segment in self.segments[1:]:
            columns.append(token_ids[:, None])
            columns.append(torch.tensor(segment, dtype=torch.long, device=token_ids.device).expand(len(token_ids), -1))
        return torch.cat(columns, dim=1)

    def ids(self, token_id: int) -> list[int]:
        return self.prefix + self.tail_ids(torch.tensor([token_id]))[0].tolist()

    @property
    def slot_positions(self) -> list[int]:
        """Where the token sits in :meth:`ids`: one position per placeholder."""
        positions, at = [], len(self.segments[0])
        for segment in self.segments[1:]:
            positions.append(at)
            at += 1 + len(segment)
        return positions


def render_prompt(tokenizer: Any, template: Template) -> Prompt:
    """Render with the chat template (or plain text) and encode the text around each placeholder."""
    if template.chat and getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": template.text}], tokenize=False, add_generation_prompt=True
        )
        rendered, leading = head + template.response_prefix, []
    else:
        rendered = NO_CHAT_TEMPLATE.format(text=template.text, prefix=template.response_prefix) if template.chat else template.text
        leading = _leading_special_ids(tokenizer)
    parts = rendered.split(PLACEHOLDER)
    if len(parts) < 2 or not parts[0]:
        raise CatalogError(f"probe template {template.key} needs text before its first {PLACEHOLDER}")
    segments = [tokenizer.encode(part, add_special_tokens=False) if part else [] for part in parts]
    segments[0] = leading + segments[0]
    return Prompt(template, rendered, tuple(tuple(s) for s in segments))


def _leading_special_ids(tokenizer: Any) -> list[int]:
    """What the tokenizer puts before plain text (Gemma's <bos>; nothing for SmolLM2)."""
    with_special = tokenizer.encode("a", add_special_tokens=True)
    without = tokenizer.encode("a", add_special_tokens=False)
    return with_special[: len(with_special) - len(without)] if with_special[-len(without) :] == without else []


@dataclass
class ProbeRecord:
    """One probe of one token: greedy output and the target's probability and rank per scored position."""

    token_id: int
    template: Template
    output_ids: list[int]
    position_probs: list[float] = field(default_factory=list)
    position_ranks: list[int] = field(default_factory=list)
    first_step_logprobs: Tensor | None = None  # [d_vocab], kept on request to compare runs

    @property
    def target_prob(self) -> float:
        return max(self.position_probs)

    @property
    def target_rank(self) -> int:
        return min(self.position_ranks)

    def settled(self, settled_prob: float) -> bool:
        """Whether some step settled the probe (see :func:`passed_surely`)."""
        return bool(passed_surely(torch.tensor(self.position_probs), torch.tensor(self.position_ranks), settled_prob).any())


def passed_surely(probs: Tensor, ranks: Tensor, settled_prob: float) -> Tensor:
    """Steps where the model predicted the target (rank 1) with at least ``settled_prob``: passed, whatever follows.

    probs, ranks [...] -> bool [...].
    """
    return (ranks == 1) & (probs >= settled_prob)


def target_prob_and_rank(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Probability and rank (1 = argmax) of ``target`` at every step.

    logits [batch, steps, d_vocab], target [batch] -> probs [batch, steps], ranks [batch, steps].
    """
    logits = logits.float()
    index = target[:, None, None].expand(-1, logits.shape[1], 1)
    target_logit = logits.gather(-1, index)
    probs = (target_logit - logits.logsumexp(-1, keepdim=True)).exp()[..., 0]
    ranks = (logits > target_logit).sum(-1) + 1
    return probs, ranks


def _records(
    pairs: Sequence[tuple[int, Template]],
    generated: Tensor,
    probs: Tensor,
    ranks: Tensor,
    eos_ids: set[int],
    lengths: Sequence[int],
    first_step_logprobs: Tensor | None = None,
) -> list[ProbeRecord]:
    """Cut each row after its first end token (or at its template's length) and pack the result."""
    records = []
    for row, (token_id, template) in enumerate(pairs):
        ids = generated[row, : lengths[row]].tolist()
        end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), len(ids))
        scored = min(end, probs.shape[1])
        first_step = first_step_logprobs[row] if first_step_logprobs is not None else None
        records.append(
            ProbeRecord(token_id, template, ids[:end], probs[row, :scored].tolist(), ranks[row, :scored].tolist(), first_step)
        )
    return records


def eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


INSERTION_MODES = ("replace", "add")


@dataclass(frozen=True)
class Insertion:
    """Vectors put in the placeholder slots of a batch of probes, one per probe, instead of the token's own.

    ``layer`` None: at the input, in units of the embedding matrix's rows (the
    model's embedding scale, Gemma's sqrt(d_model), is applied as for a real
    token). ``layer`` L: in the residual stream entering decoder layer L, where
    the vector replaces (``mode`` 'replace') or is added to (``mode`` 'add') the
    activation of the token whose id fills the slot. vectors [batch, d_model].
    """

    vectors: Tensor
    layer: int | None = None
    mode: str = "replace"


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder layers: the module list as long as ``config.num_hidden_layers``."""
    n_layers = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise CatalogError(f"cannot find the {n_layers} decoder layers of {type(model).__name__}")


def embedding_scale(model: torch.nn.Module) -> float:
    """Factor the input embedding module applies to the matrix rows (Gemma: sqrt(d_model); most models: 1)."""
    scale = getattr(model.get_input_embeddings(), "embed_scale", 1.0)
    return float(scale)


def _placed(current: Tensor, vectors: Tensor, slots: Tensor, mode: str) -> Tensor:
    """current [batch, pos, d_model], vectors [batch, d_model], slots [batch, pos] bool -> same shape as current."""
    new = vectors[:, None, :].to(current.dtype)
    return torch.where(slots[..., None], new if mode == "replace" else current + new, current)


def _residual_hook(slots: Tensor, insertion: Insertion) -> Any:
    """Forward pre-hook on a decoder layer: place the vectors during the prompt pass only (later steps see one position)."""

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != slots.shape[1]:
            return None
        placed = _placed(hidden, insertion.vectors, slots, insertion.mode)
        return ((placed, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": placed})

    return hook


@torch.no_grad()
def slot_activations(
    model: torch.nn.Module, prompt: Prompt, token_ids: Sequence[int], layer: int, *, batch_size: int, device: str
) -> Tensor:
    """Residual stream entering decoder layer ``layer`` at the prompt's first slot, one row per token: [n, d_model] float32 on the CPU.

    Every prompt of one template has the same length, so batches need no padding.
    """
    position = prompt.slot_positions[0]
    captured: list[Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        captured.append(hidden[:, position].float().cpu())

    handle = decoder_layers(model)[layer].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        for start in range(0, len(token_ids), batch_size):
            ids = torch.tensor([prompt.ids(t) for t in token_ids[start : start + batch_size]], device=device)
            model(input_ids=ids, logits_to_keep=1)
    finally:
        handle.remove()
    return torch.cat(captured)


@torch.no_grad()
def generate_probes(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: dict[str, Prompt],
    pairs: Sequence[tuple[int, Template]],
    *,
    positions: int,
    device: str,
    insertion: Insertion | None = None,
    keep_first_step: bool = False,
) -> list[ProbeRecord]:
    """Greedy-generate one batch of (token id, template) probes, left-padded to a common length.

    With ``insertion``, row i's placeholder slots hold ``insertion.vectors[i]``
    (see :class:`Insertion`); the token id stays the target the probe scores.
    ``keep_first_step`` keeps each record's first-step log-probabilities [d_vocab].
    """
    rows = [prompts[template.name].ids(token_id) for token_id, template in pairs]
    width = max(map(len, rows))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids(model, tokenizer)))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    slots = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (ids, (_, template)) in enumerate(zip(rows, pairs)):
        offset = width - len(ids)
        input_ids[i, offset:] = torch.tensor(ids)
        attention_mask[i, offset:] = 1
        slots[i, [offset + p for p in prompts[template.name].slot_positions]] = True
    input_ids, attention_mask, slots = input_ids.to(device), attention_mask.to(device), slots.to(device)
    inputs: dict[str, Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    hook = None
    if insertion is not None and insertion.layer is None:
        embeds = model.get_input_embeddings()(input_ids)
        inputs["inputs_embeds"] = _placed(embeds, insertion.vectors.to(device) * embedding_scale(model), slots, "replace")
    elif insertion is not None:
        placement = Insertion(insertion.vectors.to(device), insertion.layer, insertion.mode)
        hook = decoder_layers(model)[insertion.layer].register_forward_pre_hook(_residual_hook(slots, placement), with_kwargs=True)
    max_new = max(template.max_new_tokens for _, template in pairs)
    try:
        out = model.generate(
            **inputs,
            max_new_tokens=max_new,
            do_sample=False,
            top_p=None,
            top_k=None,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=pad_id,
        )
    finally:
        if hook is not None:
            hook.remove()
    logits = torch.stack(out.logits[:positions], dim=1)  # [batch, steps, d_vocab]
    target = torch.tensor([token_id for token_id, _ in pairs], device=logits.device)
    probs, ranks = target_prob_and_rank(logits, target)
    first_step = logits[:, 0].float().log_softmax(-1).cpu() if keep_first_step else None
    generated = out.sequences[:, width:].cpu()
    return _records(
        pairs, generated, probs.cpu(), ranks.cpu(), eos_ids(model, tokenizer), [t.max_new_tokens for _, t in pairs], first_step
    )


@torch.no_grad()
def prefix_cache(model: torch.nn.Module, prompt: Prompt, device: str) -> DynamicCache:
    """KV cache of the prompt text before the first placeholder, for a batch of one."""
    prefix = torch.tensor([prompt.prefix], device=device)
    return model(input_ids=prefix, use_cache=True).cache


def batch_cache(prefix: DynamicCache, batch: int) -> DynamicCache:
    """The prefix cache for ``batch`` rows as expanded views, copied once when the tail is appended.

    A deep copy of the batch-of-one cache keeps each layer's kind and its count of
    positions seen (a sliding-window layer holds fewer than it has seen).
    """
    cache = copy.deepcopy(prefix)
    for layer in cache.layers:
        layer.keys = layer.keys.expand(batch, -1, -1, -1)  # [batch, kv_heads, cached, head_dim]
        layer.values = layer.values.expand(batch, -1, -1, -1)
    return cache


@torch.no_grad()
def sweep_probes(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: Prompt,
    prefix: DynamicCache,
    token_ids: Sequence[int],
    *,
    positions: int,
    device: str,
    settled_prob: float | None = None,
) -> list[ProbeRecord]:
    """Probe a batch of tokens with one template, reusing the ``prefix`` cache and computing last-position logits only.

    The first forward runs the tail (token and the text after it) of every row at
    once; each further greedy step runs one position per row. With ``settled_prob``,
    a row stops at the first step where the model predicts the target (rank 1) with
    at least that probability (the probe has passed and, when ``settled_prob`` is the
    verdict's highest threshold, no later step can change the token's verdict) or at
    an end token (later steps are not scored), so the remaining steps are spent on
    the rows still undecided.
    """
    n = len(token_ids)
    ends = torch.tensor(sorted(eos_ids(model, tokenizer)), dtype=torch.long, device=device)  # scoring stops at an end token
    cache = batch_cache(prefix, n)
    target = torch.tensor(list(token_ids), dtype=torch.long, device=device)
    probs = torch.zeros((n, positions))  # [batch, steps]
    ranks = torch.zeros((n, positions), dtype=torch.long)
    generated = torch.zeros((n, positions), dtype=torch.long)
    steps_run = torch.zeros(n, dtype=torch.long)
    active = torch.arange(n, device=device)  # rows still stepping
    step_input = prompt.tail_ids(target)  # [active, tail_len]
    for step in range(positions):
        logits = model(input_ids=step_input, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # [active, d_vocab]
        step_probs, step_ranks = target_prob_and_rank(logits[:, None], target[active])
        next_ids = logits.argmax(-1)  # [active]
        rows = active.cpu()
        probs[rows, step], ranks[rows, step] = step_probs[:, 0].cpu(), step_ranks[:, 0].cpu()
        generated[rows, step], steps_run[rows] = next_ids.cpu(), step + 1
        if settled_prob is not None:
            going_on = ~passed_surely(step_probs[:, 0], step_ranks[:, 0], settled_prob) & ~torch.isin(next_ids, ends)
            if not going_on.all():
                undecided = going_on.nonzero()[:, 0]
                cache.batch_select_indices(undecided)
                active, next_ids = active[undecided], next_ids[undecided]
        if len(active) == 0:
            break
        step_input = next_ids[:, None]  # [active, 1]
    pairs = [(token_id, prompt.template) for token_id in token_ids]
    return _records(pairs, generated, probs, ranks, set(ends.tolist()), steps_run.tolist())


MODES = ("candidates", "sweep")


def _rows(insertion: Insertion | None, start: int, stop: int) -> Insertion | None:
    return None if insertion is None else Insertion(insertion.vectors[start:stop], insertion.layer, insertion.mode)


class Prober:
    """Runs (token id, template) probes in batches of ``batch_size`` (halved on out-of-memory), the way ``mode`` says."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        templates: Sequence[Template],
        *,
        mode: str,
        positions: int,
        batch_size: int,
        device: str,
        settled_prob: float | None = None,
    ):
        if mode not in MODES:
            raise CatalogError(f"unknown probe mode {mode!r}; choose one of {', '.join(MODES)}")
        self.model, self.tokenizer, self.mode = model, tokenizer, mode
        self.positions, self.device = positions, device
        self.settled_prob = settled_prob  # sweep mode: stop a row once it passes this surely (see sweep_probes)
        self.batches = AdaptiveBatches(batch_size, device)  # halves on out-of-memory; .batch_size is the size in use
        self.prompts = {t.name: render_prompt(tokenizer, t) for t in templates}
        self._caches: dict[str, DynamicCache] = {}

    def run(self, pairs: Sequence[tuple[int, Template]], insertion: Insertion | None = None, keep_first_step: bool = False) -> list[ProbeRecord]:
        """Probe every pair; with ``insertion`` (candidate mode only), pair i's slots hold ``insertion.vectors[i]``."""
        if self.mode == "candidates":
            return self.batches.map(
                lambda rows: generate_probes(
                    self.model, self.tokenizer, self.prompts, pairs[rows.start : rows.stop], positions=self.positions, device=self.device,
                    insertion=_rows(insertion, rows.start, rows.stop), keep_first_step=keep_first_step,
                ),
                range(len(pairs)),  # positions, so the inserted vectors are cut like the pairs
            )
        if insertion is not None or keep_first_step:
            raise CatalogError("sweep mode probes token ids only: run inserted vectors in candidate mode")
        return self._sweep(pairs)

    def sweep_until_settled(
        self, token_ids: Sequence[int], templates: Sequence[Template], *, every_template: Collection[int] = ()
    ) -> list[ProbeRecord]:
        """Sweep the templates in turn, each over the tokens no earlier template settled (see :meth:`ProbeRecord.settled`).

        A token some template settles has passed with at least ``settled_prob``, so
        with ``settled_prob`` the verdict's highest threshold no further template can
        change its verdict. Tokens in ``every_template`` (controls, whose failure
        rate per template calibrates the verdicts) get every template regardless.
        Listing the cheapest template first saves the most.
        """
        if self.mode != "sweep" or self.settled_prob is None:
            raise CatalogError("sweep_until_settled needs a sweep-mode prober with settled_prob")
        records, open_ids = [], list(token_ids)
        for template in templates:
            probed = self.run([(token_id, template) for token_id in open_ids])
            records += probed
            settled = {r.token_id for r in probed if r.settled(self.settled_prob)}
            open_ids = [t for t in open_ids if t not in settled or t in every_template]
        return records

    def _sweep(self, pairs: Sequence[tuple[int, Template]]) -> list[ProbeRecord]:
        by_template: dict[str, list[int]] = {}
        for token_id, template in pairs:
            by_template.setdefault(template.name, []).append(token_id)
        records = []
        for name, token_ids in by_template.items():
            prompt = self.prompts[name]
            if name not in self._caches:
                self._caches[name] = prefix_cache(self.model, prompt, self.device)
            records += self.batches.map(
                lambda batch: sweep_probes(
                    self.model, self.tokenizer, prompt, self._caches[name], batch, positions=self.positions, device=self.device,
                    settled_prob=self.settled_prob,
                ),
                token_ids,
            )
        return records


# One short forward per token: the first-forward indicator (not a verification template).
FIRST_FORWARD = Template(
    "first_forward", 1, "repeat", False, "Repeat:«TOKEN»", "", 1,
    "The token shown once; the probability that it comes next again is the first-forward indicator.",
)


def first_forward_scores(model: torch.nn.Module, tokenizer: Any, token_ids: Sequence[int], *, batch_size: int, device: str) -> Tensor:
    """-log p(token next | 'Repeat:' token): one forward of the tail per token, the prefix cached.  [n] ids -> [n]; higher = more anomalous."""
    prober = Prober(model, tokenizer, [FIRST_FORWARD], mode="sweep", positions=1, batch_size=batch_size, device=device)
    records = prober.run([(token_id, FIRST_FORWARD) for token_id in token_ids])
    return -torch.tensor([r.position_probs[0] for r in records], dtype=torch.float64).clamp_min(1e-300).log()
