"""The evaluation stage on a real SmolLM2-135M sweep sample: the table agrees with the verdicts it reads."""

import dataclasses

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError, make_engine
from catalog.queries import elicitability, evaluation_rows, latest_evaluation, missed_tokens
from catalog.schema import IngestRun, Token, TokenIndicator, TokenVerdict
from ingest.compute.evaluation import learned_scores
from ingest.jobs.cli import main
from ingest.jobs.runner import run_stage
from ingest.stages.evaluation import (
    EVALUATION,
    NOT_RANKED,
    EvaluationParams,
    other_evaluations,
)
from ingest.compute.prompts import SearchParams
from ingest.stages.probes import PROBES, ProbeParams
from ingest.stages.prompts import PROMPTS, PromptParams
from tests.conftest import SMOLLM2, fresh_database

# A seeded sample of 48 ids, echo template only, plus 6 controls: seconds on a CPU.
SAMPLE = ProbeParams.sweep(sweep_sample=48, templates=("echo_fewshot",), top=3, controls=6, determinism_sample=2, seed=3)


@pytest.fixture(scope="module")
def evaluated(smollm2, smollm2_catalog, tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("evaluation"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        run_stage(engine, PROBES, SAMPLE, loaded=smollm2)
        result = run_stage(engine, EVALUATION, EvaluationParams(batch_size=16), loaded=smollm2)
        yield engine, result
        engine.dispose()


# The same size, stratified: category x anomaly_score band, the top of the ranking over-sampled.
STRATIFIED = dataclasses.replace(SAMPLE, sweep_sample=24, sweep_strata="stratified")


@pytest.fixture(scope="module")
def stratified(smollm2, smollm2_catalog, tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("stratified"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        probes = run_stage(engine, PROBES, STRATIFIED, loaded=smollm2)
        result = run_stage(engine, EVALUATION, EvaluationParams(batch_size=16), loaded=smollm2)
        yield engine, probes, result
        engine.dispose()


def test_a_stratified_sweep_stores_its_strata_and_the_evaluation_weights_by_them(stratified):
    engine, probes, result = stratified
    assert result.status == "succeeded"
    with Session(engine) as session:
        strata = session.get(IngestRun, probes.run_id).params["strata"]
        non_special = session.scalar(select(func.count()).select_from(Token).where(Token.is_special.is_(False)))  # SmolLM2 is the only model
        run = latest_evaluation(session, SMOLLM2)
        rows = evaluation_rows(session, run.run_id)
    # The strata cover every non-special token; the sample over-samples the top of the ranking.
    assert sum(s["population"] for s in strata) == non_special
    assert all(0 < s["sample"] == len(s["token_ids"]) <= s["population"] for s in strata)
    assert 24 <= sum(s["sample"] for s in strata) <= 24 + 2 * len(strata)
    rate = {band: sum(s["sample"] for s in strata if s["band"] == band) / sum(s["population"] for s in strata if s["band"] == band) for band in ("top2%", "rest")}
    assert rate["top2%"] > 10 * rate["rest"]
    # The evaluation's estimate is the weighted count of the verified ranked tokens (weight = population / sample).
    verdicts = _ranked_verdicts(engine, run, controls=True)
    weight = {t: s["population"] / s["sample"] for s in strata if s["category"] not in NOT_RANKED for t in s["token_ids"]}
    assert set(verdicts) >= set(weight) and run.params["n_ranked"] == len(weight)
    estimate = run.params["stratified"]
    assert estimate["population"] == pytest.approx(sum(s["population"] for s in strata if s["category"] not in NOT_RANKED))
    assert estimate["estimated_n_truth"] == pytest.approx(sum(weight[t] for t in weight if verdicts[t] == "verified"))
    low, high = estimate["estimated_n_truth_interval"]
    assert low <= estimate["estimated_n_truth"] <= high
    for row in rows:
        if row.precision is not None:
            assert row.precision_low <= row.precision + 1e-12 and row.precision <= row.precision_high + 1e-12


def _ranked_verdicts(engine, run, controls=False):
    """Verdicts of the ranked tokens, read straight from token_verdict: neither special, placeholder nor a control."""
    with Session(engine) as session:
        rows = session.execute(
            select(TokenVerdict.token_id, TokenVerdict.verdict, TokenVerdict.selected_by, Token.category)
            .join(Token, (Token.tokenizer_id == TokenVerdict.tokenizer_id) & (Token.token_id == TokenVerdict.token_id))
            .where(TokenVerdict.run_id == run.probes_run_id)
        ).all()
    return {
        r.token_id: r.verdict
        for r in rows
        if r.category not in NOT_RANKED and r.verdict != "untested" and (controls or "control" not in r.selected_by)
    }


def test_the_table_counts_what_the_verdicts_say(evaluated):
    engine, result = evaluated
    assert result.status == "succeeded"
    with Session(engine) as session:
        run = latest_evaluation(session, SMOLLM2)
        rows = evaluation_rows(session, run.run_id)
    verdicts = _ranked_verdicts(engine, run)
    n_truth = sum(v == "verified" for v in verdicts.values())
    assert run.params["sampled"] is True and run.params["n_ranked"] == len(verdicts) > 40
    assert {r.n_truth for r in rows} == {n_truth} and n_truth >= 1
    indicators = {r.indicator for r in rows}
    assert {"anomaly_score", "unused_cos", "embed_norm", "head_projection", "identical_rows", "first_forward", "any_indicator"} <= indicators
    for row in rows:
        assert row.n_hits <= min(row.k, n_truth) and row.n_missed == n_truth - row.n_hits
        assert row.precision_low <= row.precision <= row.precision_high  # a sample: Wilson intervals
    # the union of every indicator's top 10% misses exactly the tokens it lists
    union_10 = next(r for r in rows if r.indicator == "any_indicator" and r.budget == "10%")
    assert union_10.n_missed == len(run.params["missed_by_all"]["10%"])


def test_r_precision_uses_a_budget_of_the_truth_size(evaluated):
    engine, _ = evaluated
    with Session(engine) as session:
        run = latest_evaluation(session, SMOLLM2)
        r_rows = [r for r in evaluation_rows(session, run.run_id) if r.budget == "R"]
    assert r_rows and all(r.k == r.n_truth and r.precision == r.recall for r in r_rows)


def test_new_indicators_are_stored_per_token(evaluated, smollm2):
    engine, _ = evaluated
    with Session(engine) as session:
        run = latest_evaluation(session, SMOLLM2)
        counts = dict(
            session.execute(
                select(TokenIndicator.indicator, func.count()).where(TokenIndicator.run_id == run.run_id).group_by(TokenIndicator.indicator)
            ).all()
        )
        first_forward = session.scalars(
            select(TokenIndicator.value).where(TokenIndicator.run_id == run.run_id, TokenIndicator.indicator == "first_forward")
        ).all()
    vocab = smollm2.embedding_rows
    assert counts["head_projection"] == counts["identical_rows"] == vocab
    assert counts["first_forward"] == run.params["n_ranked"]
    assert all(v >= 0 for v in first_forward)  # -log p


def test_calibration_statement_and_missed_tokens_are_readable(evaluated):
    engine, _ = evaluated
    with Session(engine) as session:
        run = latest_evaluation(session, SMOLLM2)
        missed = missed_tokens(session, run, "2%")
    calibration = run.params["calibration"]
    assert calibration["n_controls"] == 6 and run.statement
    assert ("separates" in run.statement) or ("too weak" in run.statement)
    assert all(token.readable and token.max_target_prob < 0.01 for token in missed)
    with Session(engine) as session, pytest.raises(CatalogError, match="unknown budget"):
        missed_tokens(session, run, "3%")


def test_cli_prints_the_table_and_refuses_a_candidate_run(evaluated, smollm2_catalog, tmp_path, capsys):
    engine, _ = evaluated
    assert main(["--db", str(engine.url), "evaluate", SMOLLM2, "--missed", "3"]) == 0
    out = capsys.readouterr().out
    assert "R-prec" in out and "any_indicator" in out and "best indicator" in out
    with fresh_database(tmp_path, template=smollm2_catalog) as url:
        assert main(["--db", url, "evaluate", SMOLLM2]) == 2
    assert "has no probes run" in capsys.readouterr().err


def test_identical_rows_counts_equal_rows():
    from ingest.compute.embedding_stats import (
        head_projection_score,
        identical_row_counts,
    )

    rows = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    rows[3] = rows[1]
    rows[5] = rows[1] + 1e-7  # within the quantisation step
    assert identical_row_counts(rows, 1e-3).tolist() == [0, 2, 0, 2, 0, 2]
    assert head_projection_score(rows, 2).shape == (6,)


def test_a_lone_model_has_nothing_to_learn_from_and_says_so(evaluated):
    engine, _ = evaluated
    with Session(engine) as session:
        run = latest_evaluation(session, SMOLLM2)
        indicators = {r.indicator for r in evaluation_rows(session, run.run_id)}
    assert run.params["learned"]["statement"].startswith("no other evaluated model in the catalog")
    assert "learned" not in indicators


def test_another_models_evaluation_reads_back_as_training_data(evaluated):
    """What a later model's learned combination trains on: this run's ranked tokens, truth and every indicator."""
    engine, _ = evaluated
    with Session(engine) as session:
        run = latest_evaluation(session, SMOLLM2)
        [other] = other_evaluations(session.connection(), model_id=-1)
    assert other.run_id == run.run_id and len(other.truth) == run.params["n_ranked"]
    assert int(other.truth.sum()) == run.params["n_truth"]
    assert {"anomaly_score", "first_forward", "head_projection", "identical_rows"} <= set(other.scores)
    assert all(len(values) == len(other.truth) for values in other.scores.values())
    assert not other.scores["first_forward"].isnan().any()  # every ranked token got its forward
    scores, features = learned_scores([(other.scores, other.truth)], other.scores, len(other.truth))
    assert "first_forward" in features and len(scores) == len(other.truth)


# One short search per target: the evaluation reads whatever the searches reached, however short.
BRIEF_SEARCH = SearchParams(max_steps=1, n_candidates=8, top_k=8, methods=("gcg",), allow_anomalous=True)


def test_elicitability_scores_the_searched_tokens_only(smollm2, smollm2_catalog, tmp_path):
    """A prompt search on four ranked tokens (a verified one among them): the indicator ranks those four, nothing else."""
    with fresh_database(tmp_path, template=smollm2_catalog) as url:
        engine = make_engine(url)
        run_stage(engine, PROBES, SAMPLE, loaded=smollm2)
        run_stage(engine, EVALUATION, EvaluationParams(batch_size=16, first_forward=False), loaded=smollm2)
        with Session(engine) as session:
            verdicts = _ranked_verdicts(engine, latest_evaluation(session, SMOLLM2))
        verified = [t for t, v in sorted(verdicts.items()) if v == "verified"][:1]
        searched = verified + [t for t, v in sorted(verdicts.items()) if v != "verified"][: 4 - len(verified)]
        run_stage(engine, PROMPTS, PromptParams(token_ids=tuple(searched), search=BRIEF_SEARCH), loaded=smollm2)
        run_stage(engine, EVALUATION, EvaluationParams(batch_size=16, first_forward=False), loaded=smollm2)
        _check_elicitability(engine, searched, verified)
        engine.dispose()


def _check_elicitability(engine, searched, verified):
    with Session(engine) as session:
        again = latest_evaluation(session, SMOLLM2)
        rows = {r.budget: r for r in evaluation_rows(session, again.run_id) if r.indicator == "elicitability"}
        stored = dict(
            session.execute(
                select(TokenIndicator.token_id, TokenIndicator.value).where(TokenIndicator.run_id == again.run_id, TokenIndicator.indicator == "elicitability")
            ).all()
        )
        best = {row.token_id: row.best_logprob for row in elicitability(session, SMOLLM2)}
    assert again.params["elicitability"]["n_searched"] == len(searched) == len(stored)
    assert again.params["elicitability"]["n_truth_searched"] == len(verified)
    assert stored == pytest.approx({t: -best[t] for t in searched})  # minus the best log-prob reached
    assert rows and all(row.k <= len(searched) for row in rows.values())  # unsearched tokens are never candidates
    assert rows["10%"].n_hits == len(verified) and rows["10%"].n_missed == rows["10%"].n_truth - len(verified)
