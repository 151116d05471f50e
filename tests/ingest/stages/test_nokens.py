"""The nokens stage on SmolLM2-135M: rows land in SQL, vectors reproduce, a real token's own embedding behaves as the token."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError, make_engine
from catalog.queries import noken_runs, noken_summary, noken_transcripts
from catalog.readonly import run_readonly_sql
from catalog.schema import IngestRun, Model, Noken, NokenNeighbor, NokenProbeResult, ProbeResult, ProbeTemplate, Token, TokenVerdict
from ingest.compute.nokens import GeneratorParams, generate, vector_from_bytes
from ingest.compute.probes import Prober, templates_named
from ingest.jobs.cli import main
from ingest.jobs.runner import run_stage
from ingest.stages import nokens as noken_stage
from ingest.stages.nokens import NOKENS, NokenParams, build_space, token_groups
from ingest.stages.probes import PROBES, ProbeParams
from tests.conftest import SMOLLM2, fresh_database, reader_url

TEMPLATES = ("echo_fewshot", "continue_list")
GENERATORS = GeneratorParams(n_random=1, n_pairs=1, alphas=(0.0, 1.0), n_sources=1, scales=(1.0, 8.0), norm_multiples=(16.0,))
# The anomalous group is the top 3 by anomaly_score: exactly the tokens the probes stage below takes for that indicator.
INPUT = NokenParams(generator_params=GENERATORS, templates=TEMPLATES, n_anomalous=3, n_normal=8)
RESIDUAL = dataclasses.replace(INPUT, space="residual", layer=6, generators=("gaussian_typical", "interpolation", "direction_sweep"))
NOKENS_DOC = Path(__file__).parents[3] / "docs" / "nokens.md"
N_INPUT = 1 + 1 + 1 + 2 + 2 * 2 + 1  # gaussian, shell, centroid, interpolation, scaled (normal + anomalous), sweep


@pytest.fixture(scope="module")
def runs(smollm2, smollm2_catalog, tmp_path_factory):
    """One catalog with a probes run (top 3 per indicator) and an input-space and a residual-space nokens run."""
    with fresh_database(tmp_path_factory.mktemp("nokens"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        run_stage(engine, PROBES, ProbeParams(top=3, controls=2, templates=TEMPLATES, determinism_sample=0), loaded=smollm2)
        yield engine, run_stage(engine, NOKENS, INPUT, loaded=smollm2), run_stage(engine, NOKENS, RESIDUAL, loaded=smollm2)
        engine.dispose()


def _nokens(engine, run_id, **where):
    with Session(engine) as session:
        query = select(Noken).where(Noken.run_id == run_id).order_by(Noken.noken_id)
        for column, value in where.items():
            query = query.where(getattr(Noken, column) == value)
        return session.scalars(query).all()


def test_every_noken_lands_in_sql_with_its_probes_and_neighbours(runs):
    engine, input_run, residual_run = runs
    assert input_run.status == residual_run.status == "succeeded"
    nokens = _nokens(engine, input_run.run_id)
    assert [n.noken_id for n in nokens] == list(range(N_INPUT))
    assert {n.space for n in nokens} == {"input"} and {n.layer for n in nokens} == {None}
    with Session(engine) as session:
        probes = session.scalar(select(func.count()).select_from(NokenProbeResult).where(NokenProbeResult.run_id == input_run.run_id))
        neighbours = session.scalar(select(func.count()).select_from(NokenNeighbor).where(NokenNeighbor.run_id == input_run.run_id))
        run = session.get(IngestRun, input_run.run_id)
    assert probes == N_INPUT * len(TEMPLATES) and neighbours == N_INPUT * INPUT.n_neighbors
    assert all(n.n_probes == len(TEMPLATES) and n.verdict in ("verified", "weakly_verified", "rejected") for n in nokens)
    assert run.params["n_nokens"] == N_INPUT and run.params["generator_params"]["scales"] == [1.0, 8.0]


def test_stored_vectors_regenerate_exactly_from_the_seed(runs, smollm2):
    engine, input_run, _ = runs
    with Session(engine) as session, session.begin():
        run = session.get(IngestRun, input_run.run_id)
        tokenizer_id = session.get(Model, run.model_id).tokenizer_id
        groups = token_groups(session.connection(), INPUT, run.params["upstream_runs"]["embedding_stats"], tokenizer_id)
        catalogued = session.scalars(select(Token.token_id).where(Token.tokenizer_id == tokenizer_id).order_by(Token.token_id)).all()
    prober = Prober(smollm2.model, smollm2.tokenizer, templates_named(TEMPLATES), mode="candidates", positions=3, batch_size=8, device="cpu")
    space = build_space(smollm2, prober, templates_named(TEMPLATES), INPUT, groups, catalogued, "cpu")
    regenerated = torch.cat([batch.draw.vectors for batch in generate(space, INPUT.generators, GENERATORS, INPUT.seed)])
    stored = torch.stack([vector_from_bytes(n.vector) for n in _nokens(engine, input_run.run_id)])
    assert torch.equal(stored, regenerated)
    assert [n.generator_seed for n in _nokens(engine, input_run.run_id, generator="centroid")] == [generate(space, ("centroid",), GENERATORS, 0)[0].seed]


def test_a_noken_equal_to_a_tokens_embedding_reproduces_its_probe_results(runs, smollm2):
    """scaled_token at scale 1 is an anomalous token's own embedding: same outputs and verdict as the probes stage gave the token."""
    engine, input_run, _ = runs
    [copy] = [n for n in _nokens(engine, input_run.run_id, generator="scaled_token") if n.details["scale"] == 1.0 and n.verdict != "rejected"]
    assert copy.nearest_token_id == copy.source_token_id and copy.nearest_cos == pytest.approx(1.0)
    assert torch.equal(vector_from_bytes(copy.vector), smollm2.input_embeddings()[copy.source_token_id])
    with Session(engine) as session:
        as_noken = session.execute(
            select(ProbeTemplate.name, NokenProbeResult.output_ids, NokenProbeResult.target_prob, NokenProbeResult.kl_from_baseline, NokenProbeResult.output_changed)
            .join(ProbeTemplate, ProbeTemplate.id == NokenProbeResult.template_id)
            .where(NokenProbeResult.run_id == input_run.run_id, NokenProbeResult.noken_id == copy.noken_id)
            .order_by(ProbeTemplate.name)
        ).all()
        as_token = session.execute(
            select(ProbeTemplate.name, ProbeResult.output_ids, ProbeResult.target_prob)
            .join(ProbeTemplate, ProbeTemplate.id == ProbeResult.template_id)
            .where(ProbeResult.token_id == copy.source_token_id)
            .order_by(ProbeTemplate.name)
        ).all()
        token_verdict = session.scalar(select(TokenVerdict.verdict).where(TokenVerdict.token_id == copy.source_token_id))
    assert [r.name for r in as_noken] == [r.name for r in as_token] == sorted(TEMPLATES)
    for noken_probe, token_probe in zip(as_noken, as_token):
        assert noken_probe.output_ids == token_probe.output_ids
        assert noken_probe.target_prob == pytest.approx(token_probe.target_prob, rel=1e-3, abs=1e-7)
        assert not noken_probe.output_changed and noken_probe.kl_from_baseline == pytest.approx(0.0, abs=1e-4)
    assert copy.verdict == token_verdict == "verified"


def _probes_of(engine, run_id, noken_id):
    with Session(engine) as session:
        return session.execute(select(NokenProbeResult).where(NokenProbeResult.run_id == run_id, NokenProbeResult.noken_id == noken_id)).scalars().all()


def test_a_normal_tokens_embedding_matches_its_baseline_and_far_vectors_change_the_output(runs):
    engine, input_run, _ = runs
    [start] = [n for n in _nokens(engine, input_run.run_id, generator="interpolation") if n.details["alpha"] == 0.0]
    assert start.nearest_token_id == start.source_token_id
    assert all(not p.output_changed and p.output_ids == p.baseline_output_ids for p in _probes_of(engine, input_run.run_id, start.noken_id))
    [far] = _nokens(engine, input_run.run_id, generator="direction_sweep")
    assert far.details["norm_multiple"] == 16.0 and far.norm_pct == 100.0 and far.rms_z_pct == 100.0
    assert any(p.output_changed and p.kl_from_baseline > 0.1 for p in _probes_of(engine, input_run.run_id, far.noken_id))


def test_residual_nokens_record_layer_activation_statistics_and_output_change(runs):
    engine, _, residual_run = runs
    nokens = _nokens(engine, residual_run.run_id)
    assert {(n.space, n.layer, n.mode) for n in nokens} == {("residual", 6, "replace")}
    [start] = [n for n in nokens if n.generator == "interpolation" and n.details["alpha"] == 0.0]
    assert start.nearest_cos == pytest.approx(1.0, abs=1e-5)  # a real activation is its own nearest row
    gaussian = [n for n in nokens if n.generator == "gaussian_typical"]
    assert all(n.rms_z_pct == 100.0 for n in gaussian)  # isotropic noise at a typical norm is far off the activation distribution
    with Session(engine) as session:
        run = session.get(IngestRun, residual_run.run_id)
    assert run.params["space_rows"] == (INPUT.n_anomalous + INPUT.n_normal) * len(TEMPLATES)


def test_summary_and_transcripts_queries(runs):
    engine, input_run, residual_run = runs
    with Session(engine) as session:
        assert [r.run_id for r in noken_runs(session, SMOLLM2)] == [residual_run.run_id, input_run.run_id]
        summary = {r.generator: r for r in noken_summary(session, SMOLLM2, input_run.run_id)}
        latest = noken_summary(session, SMOLLM2)
        transcripts = noken_transcripts(session, SMOLLM2, 0, input_run.run_id)
        with pytest.raises(CatalogError, match="no noken 999"):
            noken_transcripts(session, SMOLLM2, 999, input_run.run_id)
        with pytest.raises(CatalogError, match="not a succeeded nokens run"):
            noken_summary(session, SMOLLM2, 123456)
    assert sum(r.n_nokens for r in summary.values()) == N_INPUT and summary["centroid"].n_nokens == 1
    assert all(0.0 <= r.glitch_share <= 1.0 for r in summary.values())
    assert {r.generator for r in latest} == set(RESIDUAL.generators)
    assert [t.template for t in transcripts] == sorted(TEMPLATES)


def test_rerun_with_the_same_params_is_skipped(runs, smollm2):
    engine, input_run, _ = runs
    again = run_stage(engine, NOKENS, INPUT, loaded=smollm2)
    assert (again.status, again.run_id) == ("skipped", input_run.run_id)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dataclasses.replace(INPUT, space="residual"), "need --layer between 0 and 29"),
        (dataclasses.replace(INPUT, space="residual", layer=30), "need --layer between 0 and 29"),
        (dataclasses.replace(INPUT, layer=3), "need --space residual"),
        (dataclasses.replace(INPUT, mode="add"), "need --space residual"),
        (dataclasses.replace(INPUT, generators=("nope",)), "unknown noken generator"),
        (dataclasses.replace(INPUT, templates=("nope",)), "unknown probe template"),
    ],
)
def test_bad_parameters_are_one_line_errors_and_write_nothing(runs, smollm2, params, message):
    engine, _, _ = runs
    with Session(engine) as session:
        before = session.scalar(select(func.count()).select_from(IngestRun))
    with pytest.raises(CatalogError, match=message):
        run_stage(engine, NOKENS, params, loaded=smollm2)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(IngestRun)) == before


def test_cli_reports_and_errors(runs, capsys):
    engine, input_run, _ = runs
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--db", url, "noken-results", SMOLLM2, "--run", str(input_run.run_id)]) == 0
    out = capsys.readouterr().out
    assert "anomalous_shell" in out and "direction_sweep" in out
    assert main(["--db", url, "noken-results", SMOLLM2, "--run", str(input_run.run_id), "--noken", "0"]) == 0
    assert "baseline:" in capsys.readouterr().out
    assert main(["--db", url, "nokens", "no-such-model"]) == 2
    assert capsys.readouterr().err.startswith("glitchdex: error: no model")
    assert main(["--db", url, "nokens", SMOLLM2, "--scales", "1,x"]) == 2
    assert "--scales takes comma-separated numbers" in capsys.readouterr().err


def _doc_queries(dialects: set[str]) -> list[str]:
    blocks = re.findall(r"```(\w+)\n(.*?)```", NOKENS_DOC.read_text(), flags=re.S)
    return [sql for language, sql in blocks if language in dialects]


def test_every_sql_question_in_the_docs_answers(runs):
    engine, _, _ = runs
    url = reader_url(engine.url.render_as_string(hide_password=False))  # PostgreSQL: the SQL runner refuses a superuser
    dialects = {"sql", engine.dialect.name}
    queries = _doc_queries(dialects)
    assert len(queries) >= (4 if engine.dialect.name == "sqlite" else 3)
    for sql in queries:
        assert run_readonly_sql(sql, url).rows, sql


def test_an_interrupted_run_is_invisible_and_resumes_without_duplicates(smollm2, smollm2_catalog, tmp_path, monkeypatch):
    params = NokenParams(generators=("centroid", "direction_sweep"), generator_params=GENERATORS, templates=("echo_fewshot",))
    monkeypatch.setattr(noken_stage, "CHUNK_NOKENS", 1)  # two nokens: two chunks
    real_run, calls = Prober.run, []

    def run_then_die(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # the first chunk's noken probes and baselines went through
            raise KeyboardInterrupt
        return real_run(self, *args, **kwargs)

    with fresh_database(tmp_path, template=smollm2_catalog) as url:
        engine = make_engine(url)
        monkeypatch.setattr(Prober, "run", run_then_die)
        with pytest.raises(KeyboardInterrupt):
            run_stage(engine, NOKENS, params, loaded=smollm2)
        with Session(engine) as session:
            run = session.scalars(select(IngestRun).where(IngestRun.stage == "nokens")).one()
            assert run.status == "running" and session.scalar(select(func.count()).select_from(Noken)) == 1
            with pytest.raises(CatalogError, match="no nokens run yet"):
                noken_summary(session, SMOLLM2)
        monkeypatch.setattr(Prober, "run", real_run)
        resumed = run_stage(engine, NOKENS, params, loaded=smollm2)
        with Session(engine) as session:
            ids = session.scalars(select(Noken.noken_id).order_by(Noken.noken_id)).all()
            n_probes = session.scalar(select(func.count()).select_from(NokenProbeResult))
        engine.dispose()
    assert (resumed.status, resumed.run_id, resumed.detail) == ("succeeded", run.id, f"resumed run {run.id}")
    assert ids == [0, 1] and n_probes == 2
