"""The ``probes`` stage: probe tokens of a catalogued model, then judge them.

Candidate mode probes the top ``top`` tokens of every indicator plus ``controls``
random normal tokens with every template; sweep mode probes every non-special
token of the vocabulary with the sweep templates. Either way the stage then
writes a verdict per selected token, the precision of each indicator's top N
(and of the control sample), and a determinism check that re-runs a sample of
failing and passing tokens in other batch compositions.

The probing commits chunk by chunk (the runner, :mod:`ingest.jobs.runner`), so an
interrupted run resumes without redoing or duplicating tokens.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from catalog.database import CatalogError, bulk_insert
from catalog.queries import RANKINGS, require_run, top_anomalous_query
from catalog.schema import EmbeddingStat, IndicatorPrecision, Model, ProbeDeterminism, ProbeResult, ProbeTemplate, Token, TokenVerdict
from ingest.compute.probes import MODES, PLACEHOLDER, SWEEP_TEMPLATES, TEMPLATES, Prober, ProbeRecord, Template, templates_named
from ingest.compute.sampling import Stratum, stratified_sample
from ingest.compute.verdicts import ProbeOutcome, Thresholds, failure_category, precision, spells, verdict
from ingest.load.models import LoadedModel, is_causal_lm
from ingest.stages.base import ParamError, Unit, build_params
from ingest.stages.runs import ResumableWork

STAGE = "probes"
CONTROL = "control"
SWEEP = "sweep"
STRATIFIED = "stratified"
SAMPLE_DESIGNS = ("uniform", STRATIFIED)
CANDIDATE_CHUNK_TOKENS = 16
SWEEP_CHUNK_TOKENS = 4096
PROBE_TABLES = (ProbeResult.__table__, TokenVerdict.__table__, IndicatorPrecision.__table__, ProbeDeterminism.__table__)


@dataclass(frozen=True)
class ProbeParams:
    mode: str = "candidates"
    templates: tuple[str, ...] = tuple(t.name for t in TEMPLATES)
    top: int = 200
    controls: int = 50
    seed: int = 0
    positions: int = 3
    batch_size: int = 32
    dtype: str = "float32"
    determinism_sample: int = 4
    sweep_limit: int | None = None  # sweep only the first N token ids (benchmarks, tests)
    sweep_sample: int | None = None  # sweep a seeded random sample of N token ids instead of all (large vocabularies)
    # How sweep_sample is drawn: uniform, or stratified by category x anomaly_score band (ingest.compute.sampling;
    # the strata are stored in the run's params, and the evaluation weights its estimates by them).
    sweep_strata: str = "uniform"
    # Sweep mode: a probe stops at the step where the target is predicted with p >= thresholds.weak_below, and the
    # token skips the later templates (controls excepted): its verdict is settled (rejected). So a stored output may
    # be shorter than `positions`, its probability is a lower bound, and a rejected token may lack later templates' rows.
    stop_when_settled: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def sweep(cls, **overrides: Any) -> ProbeParams:
        return cls(**{"mode": "sweep", "templates": SWEEP_TEMPLATES, "batch_size": 256, "stop_when_settled": True, **overrides})


@dataclass
class Selection:
    """Which tokens a run probes and why."""

    by_indicator: dict[str, list[int]]  # top N token ids of each indicator
    controls: list[int]
    probed: list[int]  # in probing order, special tokens excluded
    selected_by: dict[int, str]  # every selected token (probed or not) -> reason
    strata: list[Stratum]  # a stratified sample's strata; empty otherwise


def require_embedding_stats(session: Session, model_name: str) -> tuple[Model, int]:
    """The catalogued model and its latest embedding_stats run, or a one-line error saying what to run first."""
    return require_run(session, model_name, "embedding_stats", "has no embedding statistics: run `glitchdex ingest {spec}` first")


def require_causal_lm(loaded: LoadedModel, why: str) -> None:
    if loaded.model is None or not is_causal_lm(loaded.config):
        raise CatalogError(f"{loaded.name!r} has no language-model head: {why}")


class ProbesStage:
    """Probe the selected tokens in chunks, then write verdicts, precision and the determinism check."""

    name = STAGE
    params_type = ProbeParams
    tables = PROBE_TABLES
    needs_weights = True
    uses_gpu = True
    reads_if_present = ()

    def build(self, values: Mapping[str, Any]) -> ProbeParams:
        """Sweep mode starts from the sweep defaults (templates, batch size)."""
        if values.get("mode", "candidates") not in MODES:
            raise ParamError("mode", f"probes mode must be one of {', '.join(MODES)}, not {values['mode']!r}")
        params = build_params(ProbeParams, values, base=ProbeParams.sweep() if values.get("mode") == "sweep" else ProbeParams())
        if params.stop_when_settled and params.mode != "sweep":
            raise ParamError("stop_when_settled", "probes stop_when_settled applies to sweep mode only (candidate mode keeps whole transcripts)")
        if params.sweep_strata not in SAMPLE_DESIGNS:
            raise ParamError("sweep_strata", f"probes sweep_strata must be one of {', '.join(SAMPLE_DESIGNS)}, not {params.sweep_strata!r}")
        if params.sweep_strata == STRATIFIED and (params.mode != "sweep" or params.sweep_sample is None):
            raise ParamError("sweep_strata", "a stratified sample needs sweep mode and a sample size (sweep_sample)")
        return params

    def depends_on(self, params: ProbeParams) -> tuple[str, ...]:
        return ("embedding_stats",)

    def run_params(self, params: ProbeParams) -> dict[str, Any]:
        return {**dataclasses.asdict(params), "templates": [t.key for t in templates_named(params.templates)]}

    def prepare(self, unit: Unit, params: ProbeParams) -> ResumableWork:
        loaded = unit.loaded
        require_causal_lm(loaded, "probes need a causal LM")
        loaded_dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
        if loaded_dtype != params.dtype:
            raise CatalogError(f"the model is loaded in {loaded_dtype} but the probe params say {params.dtype}")
        templates = templates_named(params.templates)
        with Session(unit.engine) as session, session.begin():
            template_ids = upsert_templates(session.connection(), templates)
            selection = select_tokens(session.connection(), params, unit.upstream["embedding_stats"], unit.tokenizer_id)
        prober = Prober(
            loaded.model, loaded.tokenizer, templates, mode=params.mode, positions=params.positions, batch_size=params.batch_size, device=unit.device,
            settled_prob=params.thresholds.weak_below if params.stop_when_settled else None,
        )
        stage = _ProbeRun(prober, templates, template_ids, selection, params, unit.model_id, unit.tokenizer_id)
        chunk = CANDIDATE_CHUNK_TOKENS if params.mode == "candidates" else SWEEP_CHUNK_TOKENS
        return ResumableWork(pending=stage.pending, process=stage.process, finish=stage.finish, chunk_size=chunk)


PROBES = ProbesStage()


def upsert_templates(conn: Connection, templates: Sequence[Template]) -> dict[str, int]:
    """Template rows by name; a stored (name, version) whose text differs means a forgotten version bump."""
    ids = {}
    for template in templates:
        values = {f.name: getattr(template, f.name) for f in dataclasses.fields(template)}
        stored = conn.execute(
            select(ProbeTemplate).where(ProbeTemplate.name == template.name, ProbeTemplate.version == template.version)
        ).one_or_none()
        if stored is None:
            ids[template.name] = conn.scalar(ProbeTemplate.__table__.insert().values(**values).returning(ProbeTemplate.id))
        elif any(getattr(stored, key) != value for key, value in values.items()):
            raise CatalogError(f"probe template {template.key} differs from the stored one: bump its version")
        else:
            ids[template.name] = stored.id
    return ids


def top_token_ids(conn: Connection, stats_run: int, by: str, n: int | None) -> list[int]:
    """The first ``n`` (None: all) token ids of an embedding_stats run's ``by`` ranking, special and placeholder tokens
    left out: placeholders (padding rows among them) are the unused-token reference and crowd its top, never candidates."""
    query = top_anomalous_query(stats_run, by).where(Token.category != "placeholder")
    return list(conn.scalars(query.with_only_columns(Token.token_id).limit(n)))


def sample_normal_tokens(conn: Connection, tokenizer_id: int, n: int, seed: int, exclude: set[int]) -> list[int]:
    """A seeded sample of ``n`` token ids of category 'normal' outside ``exclude``, sorted."""
    normal = conn.scalars(
        select(Token.token_id).where(Token.tokenizer_id == tokenizer_id, Token.category == "normal").order_by(Token.token_id)
    ).all()
    pool = [t for t in normal if t not in exclude]
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def draw_strata(conn: Connection, params: ProbeParams, stats_run: int, tokenizer_id: int, population: Sequence[int]) -> list[Stratum]:
    """A stratified sample of the population's non-special tokens: category x band of the stats run's anomaly_score ranking."""
    pool = set(population)
    categories = {
        token_id: category
        for token_id, category in conn.execute(
            select(Token.token_id, Token.category).where(Token.tokenizer_id == tokenizer_id, Token.is_special.is_(False))
        )
        if token_id in pool
    }
    ranked = [token_id for token_id in top_token_ids(conn, stats_run, "anomaly_score", None) if token_id in categories]
    unscored = sorted(set(categories) - set(ranked))  # no statistic (beyond the matrix): least anomalous
    return stratified_sample(categories, ranked + unscored, params.sweep_sample, params.seed)


def draw_sample(conn: Connection, params: ProbeParams, stats_run: int, tokenizer_id: int, population: Sequence[int]) -> tuple[list[int], list[Stratum]]:
    """The ``sweep_sample`` token ids drawn from the population, and their strata (none for a uniform sample)."""
    if params.sweep_strata == STRATIFIED:
        strata = draw_strata(conn, params, stats_run, tokenizer_id, population)
        return [token_id for stratum in strata for token_id in stratum.token_ids], strata
    return random.Random(params.seed).sample(population, min(params.sweep_sample, len(population))), []


def select_tokens(conn: Connection, params: ProbeParams, stats_run: int, tokenizer_id: int) -> Selection:
    """Top ``params.top`` non-special tokens of every indicator and a seeded sample of normal tokens; all tokens in sweep mode."""
    by_indicator = {name: top_token_ids(conn, stats_run, name, params.top) for name in RANKINGS}
    candidates = {token_id for ids in by_indicator.values() for token_id in ids}
    controls = sample_normal_tokens(conn, tokenizer_id, params.controls, params.seed, candidates)
    special = set(conn.scalars(select(Token.token_id).where(Token.tokenizer_id == tokenizer_id, Token.is_special.is_(True))))

    reasons: dict[int, list[str]] = defaultdict(list)
    for name, ids in by_indicator.items():
        for token_id in ids:
            reasons[token_id].append(name)
    for token_id in controls:
        reasons[token_id].append(CONTROL)
    strata: list[Stratum] = []
    if params.mode == "sweep":
        # The statistics cover exactly the model's embedding rows, its padding rows included (probed by id like any
        # row); the tokenizer may also hold padding rows of a more padded model.
        every = conn.scalars(select(EmbeddingStat.token_id).where(EmbeddingStat.run_id == stats_run).order_by(EmbeddingStat.token_id)).all()
        every = every[: params.sweep_limit] if params.sweep_limit is not None else every
        if params.sweep_sample is not None:
            drawn, strata = draw_sample(conn, params, stats_run, tokenizer_id, every)
            # Controls stay in, so the control floor is measured on the same run.
            every = sorted(set(drawn) | set(controls))
        selected_by = {token_id: ",".join(reasons.get(token_id, [SWEEP])) for token_id in every}
    else:
        selected_by = {token_id: ",".join(why) for token_id, why in reasons.items()}
    probed = [token_id for token_id in selected_by if token_id not in special]
    return Selection(by_indicator, controls, probed, selected_by, strata)


def outcome_fields(tokenizer: Any, record: ProbeRecord, token_text: str) -> dict[str, Any]:
    """The probe_result columns that judge one probe: output, target probability and rank, pass/fail and how it failed."""
    answer = tokenizer.decode(record.output_ids, skip_special_tokens=True)
    template = record.template
    passed = spells(answer, token_text) if template.kind == "spell" else record.target_rank == 1
    question = (template.text + "\n" + template.response_prefix).replace(PLACEHOLDER, " ")
    return {
        "output": tokenizer.decode(record.output_ids),
        "output_ids": " ".join(map(str, record.output_ids)),
        "target_prob": record.target_prob,
        "target_rank": record.target_rank,
        "position_probs": record.position_probs,
        "position_ranks": record.position_ranks,
        "passed": passed,
        "failure_category": None if passed else failure_category(answer, token_text, question),
    }


class _ProbeRun:
    """The three callbacks of the resumable stage, sharing the prober and the selection."""

    def __init__(
        self,
        prober: Prober,
        templates: Sequence[Template],
        template_ids: dict[str, int],
        selection: Selection,
        params: ProbeParams,
        model_id: int,
        tokenizer_id: int,
    ):
        self.prober, self.templates, self.template_ids = prober, templates, template_ids
        self.selection, self.params = selection, params
        self.model_id, self.tokenizer_id = model_id, tokenizer_id

    # --- chunks ----------------------------------------------------------------------

    def pending(self, conn: Connection, run_id: int) -> list[int]:
        done = set(conn.scalars(select(ProbeResult.token_id).where(ProbeResult.run_id == run_id).distinct()))
        return [token_id for token_id in self.selection.probed if token_id not in done]

    def process(self, conn: Connection, run_id: int, token_ids: list[int]) -> int:
        texts = dict(
            conn.execute(
                select(Token.token_id, Token.text).where(Token.tokenizer_id == self.tokenizer_id, Token.token_id.in_(token_ids))
            ).all()
        )
        if self.prober.settled_prob is not None:
            records = self.prober.sweep_until_settled(token_ids, self.templates, every_template=set(self.selection.controls))
        else:
            records = self.prober.run([(token_id, template) for token_id in token_ids for template in self.templates])
        rows = [self._result_row(record, texts[record.token_id], run_id) for record in records]
        return bulk_insert(conn, ProbeResult.__table__, rows)

    def _result_row(self, record: ProbeRecord, token_text: str, run_id: int) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "token_id": record.token_id,
            "template_id": self.template_ids[record.template.name],
            "model_id": self.model_id,
            "tokenizer_id": self.tokenizer_id,
            **outcome_fields(self.prober.tokenizer, record, token_text),
        }

    # --- finishing step --------------------------------------------------------------

    def finish(self, conn: Connection, run_id: int, _params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        verdicts = self._write_verdicts(conn, run_id)
        n_rows = len(verdicts)
        n_rows += bulk_insert(conn, IndicatorPrecision.__table__, self._precision_rows(verdicts, run_id))
        determinism = self._determinism_rows(conn, run_id, verdicts)
        n_rows += bulk_insert(conn, ProbeDeterminism.__table__, determinism)
        counts = {label: sum(v == label for v in verdicts.values()) for label in sorted(set(verdicts.values()))}
        extra = {
            "rendered_prompts": {t.key: self.prober.prompts[t.name].rendered for t in self.templates},
            "n_probed": len(self.selection.probed),
            "verdict_counts": counts,
            "determinism_changed": sum(row["changed"] for row in determinism),
            # Below batch_size when out-of-memory forced smaller batches (in this invocation).
            "batch_size_used": self.prober.batches.batch_size,
        }
        if self.selection.strata:
            extra["strata"] = [stratum.as_params() for stratum in self.selection.strata]
        return n_rows, extra

    def _write_verdicts(self, conn: Connection, run_id: int) -> dict[int, str]:
        kinds = {self.template_ids[t.name]: t.kind for t in self.templates}
        outcomes: dict[int, list[ProbeOutcome]] = defaultdict(list)
        for row in conn.execute(
            select(ProbeResult.token_id, ProbeResult.template_id, ProbeResult.passed, ProbeResult.target_prob, ProbeResult.failure_category)
            .where(ProbeResult.run_id == run_id)
        ):
            outcomes[row.token_id].append(ProbeOutcome(kinds[row.template_id], row.passed, row.target_prob, row.failure_category))
        rows, labels = [], {}
        for token_id, reason in self.selection.selected_by.items():
            judged = verdict(outcomes.get(token_id, []), self.params.thresholds)
            labels[token_id] = judged.verdict
            rows.append(
                {
                    "run_id": run_id,
                    "token_id": token_id,
                    "model_id": self.model_id,
                    "tokenizer_id": self.tokenizer_id,
                    "selected_by": reason,
                    **dataclasses.asdict(judged),
                }
            )
        bulk_insert(conn, TokenVerdict.__table__, rows)
        return labels

    def _precision_rows(self, verdicts: dict[int, str], run_id: int) -> list[dict[str, Any]]:
        groups = {**self.selection.by_indicator, CONTROL: self.selection.controls}
        rows = []
        for indicator, token_ids in groups.items():
            labels = [verdicts.get(token_id, "untested") for token_id in token_ids]
            tested = sum(label != "untested" for label in labels)
            verified = labels.count("verified")
            weak = labels.count("weakly_verified")
            rows.append(
                {
                    "run_id": run_id,
                    "indicator": indicator,
                    "model_id": self.model_id,
                    "n_selected": len(token_ids),
                    "n_tested": tested,
                    "n_verified": verified,
                    "n_weakly_verified": weak,
                    "precision": precision(tested, verified),
                    "precision_weak": precision(tested, verified + weak),
                }
            )
        return rows

    def _determinism_sample(self, verdicts: dict[int, str]) -> list[int]:
        """Up to half failing (verified or weakly verified) and half passing (rejected) tokens, seeded."""
        rng = random.Random(self.params.seed)
        half = self.params.determinism_sample // 2
        failing = sorted(t for t, v in verdicts.items() if v in ("verified", "weakly_verified"))
        passing = sorted(t for t, v in verdicts.items() if v == "rejected")
        pick = rng.sample(failing, min(half, len(failing)))
        return pick + rng.sample(passing, min(self.params.determinism_sample - len(pick), len(passing)))

    def _determinism_rows(self, conn: Connection, run_id: int, verdicts: dict[int, str]) -> list[dict[str, Any]]:
        sample = self._determinism_sample(verdicts)
        stored = {
            (row.token_id, row.template_id): row.output_ids
            for row in conn.execute(
                select(ProbeResult.token_id, ProbeResult.template_id, ProbeResult.output_ids).where(
                    ProbeResult.run_id == run_id, ProbeResult.token_id.in_(sample)
                )
            )
        }
        # Only the probes the run stored: a sweep skips the templates after the one that settles a token.
        pairs = [(t, template) for t in sample for template in self.templates if (t, self.template_ids[template.name]) in stored]
        trials = {
            "alone": [(record, 1) for pair in pairs for record in self.prober.run([pair])],
            "reshuffled": [(record, min(len(pairs), self.prober.batches.batch_size)) for record in self.prober.run(pairs[::-1])],
        }
        rows = []
        for trial, records in trials.items():
            for record, batch_size in records:
                template_id = self.template_ids[record.template.name]
                output_ids = " ".join(map(str, record.output_ids))
                rows.append(
                    {
                        "run_id": run_id,
                        "token_id": record.token_id,
                        "template_id": template_id,
                        "trial": trial,
                        "model_id": self.model_id,
                        "batch_size": batch_size,
                        "output_ids": output_ids,
                        "changed": output_ids != stored[(record.token_id, template_id)],
                    }
                )
        return rows
