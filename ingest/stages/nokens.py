"""The ``nokens`` stage: make synthetic vectors, probe them like tokens, store both.

For a catalogued model with embedding statistics, the stage builds the vector
space (input embeddings, or residual activations entering a decoder layer at
the probe prompts' token slots), runs the chosen generators, describes every
vector against the space, and probes it with the probe stage's templates: the
vector sits in the token slots and the target is its nearest real token. Each
probe is compared with the same probe of that real token (the baseline):
greedy output changed or not, and the KL divergence of the first next-token
distribution. A verdict per noken comes from the probe stage's rule, so
``noken.verdict`` and ``token_verdict.verdict`` compare directly.

Nokens commit chunk by chunk (the runner, :mod:`ingest.jobs.runner`); the vectors
are regenerated from the seed on resume, and also stored, so any result can be
reproduced without the generator code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from catalog.database import CatalogError, bulk_insert
from catalog.schema import Noken, NokenNeighbor, NokenProbeResult, Token
from ingest.compute.nokens import GENERATORS, Generated, GeneratorParams, VectorSpace, describe_vectors, generate, vector_bytes
from ingest.compute.probes import INSERTION_MODES, TEMPLATES, Insertion, Prober, Template, decoder_layers, slot_activations, templates_named
from ingest.compute.verdicts import ProbeOutcome, Thresholds, verdict
from ingest.load.models import LoadedModel
from ingest.stages.probes import (
    outcome_fields,
    require_causal_lm,
    sample_normal_tokens,
    top_token_ids,
    upsert_templates,
)
from ingest.stages.base import Unit, build_params
from ingest.stages.runs import ResumableWork

STAGE = "nokens"
SPACES = ("input", "residual")
CHUNK_NOKENS = 8
TIE_COSINE = 1e-6
NOKEN_TABLES = (NokenProbeResult.__table__, NokenNeighbor.__table__, Noken.__table__)


@dataclass(frozen=True)
class NokenParams:
    space: str = "input"
    layer: int | None = None  # residual space: decoder layer whose input holds the vector
    mode: str = "replace"
    generators: tuple[str, ...] = tuple(GENERATORS)
    generator_params: GeneratorParams = field(default_factory=GeneratorParams)
    templates: tuple[str, ...] = tuple(t.name for t in TEMPLATES)
    n_anomalous: int = 50  # the catalog's top tokens by anomaly_score form the anomalous group
    n_normal: int = 50  # seeded sample of 'normal' tokens
    seed: int = 0
    positions: int = 3
    batch_size: int = 16
    n_neighbors: int = 5
    thresholds: Thresholds = field(default_factory=Thresholds)

    def check(self, n_layers: int) -> None:
        """One-line errors for parameter combinations the stage cannot run."""
        if self.space not in SPACES:
            raise CatalogError(f"unknown noken space {self.space!r}; choose one of {', '.join(SPACES)}")
        if self.mode not in INSERTION_MODES:
            raise CatalogError(f"unknown noken mode {self.mode!r}; choose one of {', '.join(INSERTION_MODES)}")
        if self.space == "input" and (self.layer is not None or self.mode != "replace"):
            raise CatalogError("input-space nokens replace the token embedding: --layer and --mode add need --space residual")
        if self.space == "residual" and not (self.layer is not None and 0 <= self.layer < n_layers):
            raise CatalogError(f"residual nokens need --layer between 0 and {n_layers - 1}")


@dataclass(frozen=True)
class Groups:
    """The token ids the space's anomalous and normal groups come from."""

    anomalous: list[int]
    normal: list[int]


class NokensStage:
    """Build the vector space, generate the nokens, then describe and probe them in chunks."""

    name = STAGE
    params_type = NokenParams
    tables = NOKEN_TABLES
    needs_weights = True
    uses_gpu = True
    reads_if_present = ()

    def build(self, values: Mapping[str, Any]) -> NokenParams:
        return build_params(NokenParams, values)

    def depends_on(self, params: NokenParams) -> tuple[str, ...]:
        return ("embedding_stats",)

    def run_params(self, params: NokenParams) -> dict[str, Any]:
        return {**dataclasses.asdict(params), "templates": [t.key for t in templates_named(params.templates)]}

    def prepare(self, unit: Unit, params: NokenParams) -> ResumableWork:
        loaded, device = unit.loaded, unit.device
        require_causal_lm(loaded, "nokens are probed through a causal LM")
        params.check(len(decoder_layers(loaded.model)))
        templates = templates_named(params.templates)
        with Session(unit.engine) as session, session.begin():
            template_ids = upsert_templates(session.connection(), templates)
            groups = token_groups(session.connection(), params, unit.upstream["embedding_stats"], unit.tokenizer_id)
            # Below the model's row count: the tokenizer may hold padding rows of a more padded model.
            rows = select(Token.token_id).where(Token.tokenizer_id == unit.tokenizer_id, Token.token_id < loaded.embedding_rows)
            catalogued = session.scalars(rows.order_by(Token.token_id)).all()
        prober = Prober(loaded.model, loaded.tokenizer, templates, mode="candidates", positions=params.positions, batch_size=params.batch_size, device=device)
        space = build_space(loaded, prober, templates, params, groups, catalogued, device)
        generated = generate(space, params.generators, params.generator_params, params.seed)
        stage = _NokenRun(prober, templates, template_ids, space, generated, params, unit.model_id, unit.tokenizer_id, device)
        return ResumableWork(pending=stage.pending, process=stage.process, finish=stage.finish, chunk_size=CHUNK_NOKENS)


NOKENS = NokensStage()


def token_groups(conn: Connection, params: NokenParams, stats_run: int, tokenizer_id: int) -> Groups:
    """Top ``n_anomalous`` non-special tokens by anomaly_score, and a seeded sample of ``n_normal`` normal tokens."""
    anomalous = top_token_ids(conn, stats_run, "anomaly_score", params.n_anomalous)
    return Groups(anomalous, sample_normal_tokens(conn, tokenizer_id, params.n_normal, params.seed, set(anomalous)))


def build_space(
    loaded: LoadedModel,
    prober: Prober,
    templates: Sequence[Template],
    params: NokenParams,
    groups: Groups,
    catalogued: Sequence[int],
    device: str,
) -> VectorSpace:
    """Input space: every catalogued token's embedding row. Residual space: activations entering
    ``params.layer`` at the first slot of every template's prompt, for the anomalous and normal tokens."""
    if params.space == "input":
        ids = torch.tensor(catalogued)
        vectors = loaded.input_embeddings().detach().float().cpu()[ids]
        anomalous, normal = torch.tensor(groups.anomalous, dtype=torch.long), torch.tensor(groups.normal, dtype=torch.long)
        return VectorSpace(vectors, ids, _rows_of(ids, anomalous), _rows_of(ids, normal))
    tokens = groups.anomalous + groups.normal
    vectors = torch.cat(
        [
            slot_activations(loaded.model, prober.prompts[t.name], tokens, params.layer, batch_size=params.batch_size, device=device)
            for t in templates
        ]
    )
    ids = torch.tensor(tokens * len(templates))
    rows = torch.arange(len(ids))
    is_anomalous = torch.tensor([i < len(groups.anomalous) for i in range(len(tokens))] * len(templates))
    return VectorSpace(vectors, ids, rows[is_anomalous], rows[~is_anomalous])


def _rows_of(ids: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Row indices of ``wanted`` token ids in the sorted ``ids``."""
    return torch.searchsorted(ids, wanted)


def kl_divergence(baseline: torch.Tensor, other: torch.Tensor) -> float:
    """KL(baseline || other) in nats from two log-probability vectors [d_vocab]."""
    return float((baseline.exp() * (baseline - other)).sum().clamp(min=0.0))


class _NokenRun:
    """The three callbacks of the resumable stage, sharing the prober, the space and the generated vectors."""

    def __init__(
        self,
        prober: Prober,
        templates: Sequence[Template],
        template_ids: dict[str, int],
        space: VectorSpace,
        generated: list[Generated],
        params: NokenParams,
        model_id: int,
        tokenizer_id: int,
        device: str,
    ):
        self.prober, self.templates, self.template_ids = prober, templates, template_ids
        self.space, self.params, self.device = space, params, device
        self.model_id, self.tokenizer_id = model_id, tokenizer_id
        # Noken ids number the generators' vectors consecutively, so they index these directly.
        self.made_by = [(batch, i - batch.start) for batch in generated for i in batch.indices]
        self.vectors = torch.cat([batch.draw.vectors for batch in generated])  # [n_nokens, d_model]
        self.source_rows = torch.cat([batch.draw.source_rows for batch in generated])  # [n_nokens]
        self.source2_rows = torch.cat([batch.draw.source2_rows for batch in generated])

    def pending(self, conn: Connection, run_id: int) -> list[int]:
        done = set(conn.scalars(select(Noken.noken_id).where(Noken.run_id == run_id)))
        return [i for i in range(len(self.made_by)) if i not in done]

    def process(self, conn: Connection, run_id: int, noken_ids: list[int]) -> int:
        vectors = self.vectors[noken_ids]  # [chunk, d_model]
        described = describe_vectors(vectors, self.space, k=self.params.n_neighbors, device=self.device)
        targets = self._targets(noken_ids, described.neighbor_cos[:, 0], described.neighbor_tokens[:, 0])
        texts = dict(
            conn.execute(select(Token.token_id, Token.text).where(Token.tokenizer_id == self.tokenizer_id, Token.token_id.in_(set(targets)))).all()
        )
        pairs = [(target, template) for target in targets for template in self.templates]
        insertion = Insertion(vectors.repeat_interleave(len(self.templates), 0), self.params.layer, self.params.mode)
        records = self.prober.run(pairs, insertion, keep_first_step=True)
        baselines = self._baselines(sorted(set(targets)))
        results, outcomes = [], {i: [] for i in noken_ids}
        for row, record in enumerate(records):
            noken_id = noken_ids[row // len(self.templates)]
            base = baselines[(record.token_id, record.template.name)]
            fields = outcome_fields(self.prober.tokenizer, record, texts[record.token_id])
            outcomes[noken_id].append(ProbeOutcome(record.template.kind, fields["passed"], fields["target_prob"], fields["failure_category"]))
            results.append(
                {
                    "run_id": run_id,
                    "noken_id": noken_id,
                    "template_id": self.template_ids[record.template.name],
                    "model_id": self.model_id,
                    "target_token_id": record.token_id,
                    **fields,
                    "baseline_output": self.prober.tokenizer.decode(base.output_ids),
                    "baseline_output_ids": " ".join(map(str, base.output_ids)),
                    "output_changed": record.output_ids != base.output_ids,
                    "kl_from_baseline": kl_divergence(base.first_step_logprobs, record.first_step_logprobs),
                }
            )
        n = bulk_insert(conn, Noken.__table__, self._noken_rows(run_id, noken_ids, vectors, described, targets, outcomes))
        n += bulk_insert(conn, NokenNeighbor.__table__, self._neighbor_rows(run_id, noken_ids, described))
        return n + bulk_insert(conn, NokenProbeResult.__table__, results)

    def _targets(self, noken_ids: list[int], best_cos: torch.Tensor, nearest: torch.Tensor) -> list[int]:
        """Each noken's nearest real token; on a tie the token it was made from, since a quantised model's
        rarely trained tokens can share one embedding row with other tokens.  [chunk] each."""
        targets = nearest.clone()
        for rows in (self.source2_rows[noken_ids], self.source_rows[noken_ids]):  # the first source wins when both tie
            own = torch.nn.functional.cosine_similarity(self.vectors[noken_ids], self.space.vectors[rows.clamp(min=0)], dim=1)
            tie = (rows >= 0) & (own >= best_cos - TIE_COSINE)
            targets = torch.where(tie, self.space.token_ids[rows.clamp(min=0)], targets)
        return targets.tolist()

    def _baselines(self, targets: list[int]) -> dict[tuple[int, str], Any]:
        """The same probes with the real target tokens in the slots, by (token id, template name)."""
        records = self.prober.run([(t, template) for t in targets for template in self.templates], keep_first_step=True)
        return {(r.token_id, r.template.name): r for r in records}

    def _token_of(self, row: int) -> int | None:
        return None if row < 0 else int(self.space.token_ids[row])

    def _noken_rows(
        self, run_id: int, noken_ids: list[int], vectors: torch.Tensor, described: Any, targets: list[int], outcomes: dict[int, list[ProbeOutcome]]
    ) -> list[dict[str, Any]]:
        rows = []
        for k, noken_id in enumerate(noken_ids):
            batch, j = self.made_by[noken_id]
            judged = verdict(outcomes[noken_id], self.params.thresholds)
            rows.append(
                {
                    "run_id": run_id,
                    "noken_id": noken_id,
                    "model_id": self.model_id,
                    "tokenizer_id": self.tokenizer_id,
                    "space": self.params.space,
                    "layer": self.params.layer,
                    "mode": self.params.mode,
                    "generator": batch.name,
                    "generator_seed": batch.seed,
                    "details": batch.draw.details[j],
                    "source_token_id": self._token_of(int(self.source_rows[noken_id])),
                    "source2_token_id": self._token_of(int(self.source2_rows[noken_id])),
                    "vector": vector_bytes(vectors[k]),
                    "d_model": vectors.shape[1],
                    "norm": described.norm[k].item(),
                    "norm_pct": described.norm_pct[k].item(),
                    "centroid_dist": described.centroid_dist[k].item(),
                    "centroid_dist_pct": described.centroid_dist_pct[k].item(),
                    "centroid_cos": described.centroid_cos[k].item(),
                    "rms_z": described.rms_z[k].item(),
                    "rms_z_pct": described.rms_z_pct[k].item(),
                    "nearest_token_id": targets[k],
                    "nearest_cos": described.neighbor_cos[k, 0].item(),
                    "verdict": judged.verdict,
                    "max_target_prob": judged.max_target_prob,
                    "n_probes": judged.n_probes,
                    "n_passed": judged.n_passed,
                    "failure_category": judged.failure_category,
                }
            )
        return rows

    def _neighbor_rows(self, run_id: int, noken_ids: list[int], described: Any) -> list[dict[str, Any]]:
        k = described.neighbor_tokens.shape[1]
        return [
            {
                "run_id": run_id,
                "noken_id": noken_id,
                "rank": rank + 1,
                "tokenizer_id": self.tokenizer_id,
                "token_id": int(described.neighbor_tokens[row, rank]),
                "cosine": described.neighbor_cos[row, rank].item(),
            }
            for row, noken_id in enumerate(noken_ids)
            for rank in range(k)
        ]

    def finish(self, conn: Connection, run_id: int, _params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        counts: dict[str, dict[str, int]] = {}
        for generator, label in conn.execute(select(Noken.generator, Noken.verdict).where(Noken.run_id == run_id)):
            counts.setdefault(generator, {}).setdefault(label, 0)
            counts[generator][label] += 1
        extra = {
            "n_nokens": len(self.made_by),
            "verdict_counts": counts,
            "space_rows": len(self.space.vectors),
            "typical_norm": self.space.typical_norm,
            "batch_size_used": self.prober.batches.batch_size,
            "rendered_prompts": {t.key: self.prober.prompts[t.name].rendered for t in self.templates},
        }
        return 0, extra
