"""Prompt search: tiny random models for the mechanics, SmolLM2-135M for the real thing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from catalog.database import make_engine
from catalog.queries import elicitability, find_model, latest_run_id, prompt_results
from catalog.schema import IngestRun, PromptSearch
from ingest.compute import prompts as prompt_compute
from ingest.compute.prompts import PromptLM, SearchParams, ban_rules, continuous_search, gcg_search, initial_prompt, score_targets
from ingest.jobs.cli import main
from ingest.jobs.pipeline import ingest
from ingest.jobs.runner import run_stage
from ingest.load.models import LoadedModel
from ingest.stages.prompts import PROMPTS, PromptParams, catalog_ban_rules, frame_ids, special_prefix_ids, spelled_pieces
from tests.conftest import SMOLLM2, fresh_database

TINY_VOCAB = 300
TINY = dict(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
TINY_PARAMS = SearchParams(prompt_len=4, max_steps=5, top_k=8, n_candidates=12, n_slots=2, continuous_steps=6)
COMMA, THE = 28, 260  # SmolLM2 ids of ',' and ' the': tokens almost any prompt can be pushed to emit
MARKS, MIG = 8029, 20401  # SmolLM2 ids of ' marks' and ' Mig', two of the seed-0 controls


def tiny_lm(config_class, model_class) -> PromptLM:
    """A tiny random model inside a frame: BOS and three frame ids before the prompt, two after."""
    torch.manual_seed(0)
    return PromptLM(model_class(config_class(**TINY)).eval(), prefix_ids=[1, 20, 21, 22], suffix_ids=[23, 24])


def tiny_bans(allow_anomalous: bool = False):
    texts = {i: f"t{i}" for i in range(TINY_VOCAB - 10)}  # the last 10 embedding rows have no token
    return ban_rules(texts, special_ids=[0, 1, 2], anomalous_ids=[5, 6], allow_anomalous=allow_anomalous, d_vocab=TINY_VOCAB)


# --- mechanics on tiny random models ------------------------------------------------


def test_inputs_embeds_replicate_gemma3_embedding_scale():
    lm = tiny_lm(Gemma3TextConfig, Gemma3ForCausalLM)
    embedding = lm.model.get_input_embeddings()
    ids = torch.arange(TINY_VOCAB)
    assert not torch.allclose(lm.table, embedding.weight)  # Gemma3 scales: the raw weight would be wrong
    torch.testing.assert_close(lm.table, embedding(ids))
    prompts = torch.randint(3, 290, (4, 5))
    greedy = lm.greedy_next_ids(prompts)  # through input_ids
    assert lm.score_ids(prompts, greedy, chunk=3).rank.tolist() == [1, 1, 1, 1]  # through inputs_embeds


@pytest.mark.parametrize("architecture", [(LlamaConfig, LlamaForCausalLM), (Gemma3TextConfig, Gemma3ForCausalLM)], ids=["llama", "gemma3"])
def test_cached_frame_prefix_gives_the_full_forward_logits(architecture):
    lm = tiny_lm(*architecture)
    prompts = torch.randint(3, 290, (3, 4))
    full = lm.model(input_ids=lm.framed_ids(prompts)).logits[:, -1]  # the whole framed sequence, no cache
    torch.testing.assert_close(lm.next_logits(lm.table[prompts]), full)
    assert lm.framed_ids(prompts)[0].tolist() == [1, 20, 21, 22, *prompts[0].tolist(), 23, 24]


def test_initial_prompt_repeats_allowed_pieces_else_draws_random_tokens():
    banned = torch.zeros(TINY_VOCAB, dtype=torch.bool)
    banned[7] = True
    generator = torch.Generator().manual_seed(0)
    assert initial_prompt([5, 7, 6], banned, 5, generator).tolist() == [6, 5, 6, 5, 6]  # banned 7 dropped; ends on a whole copy
    assert initial_prompt([5, 6, 8], banned, 2, generator).tolist() == [6, 8]
    random = initial_prompt([], banned, 50, generator)
    assert len(random) == 50 and not banned[random].any() and len(set(random.tolist())) > 10


def test_score_targets_rank_and_margin():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 3.0, 1.0]])
    scores = score_targets(logits, torch.tensor([1, 2]))
    assert scores.rank.tolist() == [1, 3]
    torch.testing.assert_close(scores.margin, torch.tensor([2.0, -4.0]))
    torch.testing.assert_close(scores.logprob, logits.log_softmax(-1)[[0, 1], [1, 2]])


def test_bans_cover_target_text_specials_missing_ids_and_anomalous():
    masks = tiny_bans().masks([12, 100])
    banned_12 = set(masks[0].nonzero()[:, 0].tolist())
    assert {12, *range(120, 130)} <= banned_12  # 't12' is contained in 't120'..'t129'
    assert {0, 1, 2, 5, 6, *range(290, 300)} <= banned_12
    assert 13 not in banned_12 and 21 not in banned_12
    assert masks[1].sum() == 1 + 3 + 2 + 10  # 't100' is in no other token
    assert not tiny_bans(allow_anomalous=True).masks([100])[0, [5, 6]].any()


def test_ban_matches_stripped_text_of_whitespace_prefixed_targets():
    bans = ban_rules({0: " cat", 1: "cat", 2: "cats", 3: " dog", 4: "  "}, [], [], allow_anomalous=False, d_vocab=5)
    assert bans.masks([0])[0].tolist() == [True, True, True, False, False]
    assert bans.masks([4])[0].tolist() == [False, False, False, False, True]  # whitespace target: only itself


def test_gcg_refills_slots_and_respects_hyperparameters_and_bans():
    lm, bans = tiny_lm(LlamaConfig, LlamaForCausalLM), tiny_bans()
    targets = [12, 100, 150, 200, 250]
    results = list(gcg_search(lm, targets, bans, TINY_PARAMS))
    assert sorted(r.token_id for r in results) == targets  # 5 targets through 2 slots, each exactly once
    masks = bans.masks([r.token_id for r in results])
    for result, banned in zip(results, masks):
        assert len(result.prompt_ids) == TINY_PARAMS.prompt_len
        assert not banned[result.prompt_ids].any()
        assert 1 <= result.steps <= TINY_PARAMS.max_steps
        assert result.steps == TINY_PARAMS.max_steps or result.rank == 1  # only success ends a search early
        assert result.n_evaluations == result.steps * (TINY_PARAMS.n_candidates + 1)
        assert result.restarts == 0  # patience (8) exceeds the budget (5)
        assert len(result.trajectory) == result.steps
        assert max(_rises(result), default=0.0) < 1e-4  # the best prompt is kept: loss never rises (beyond float noise)


def _rises(result) -> list[float]:
    """Rises of a search's best-so-far loss; the step that succeeds may rise (success outranks log-prob)."""
    trajectory = result.trajectory[:-1] if result.rank == 1 else result.trajectory
    return [later - earlier for earlier, later in zip(trajectory, trajectory[1:])]


def test_success_comes_first_then_the_objective():
    # slot 0: candidate 1 has the best log-prob but only candidates 0 and 2 succeed; 2 has the wider margin
    # slot 1: nothing succeeds, so the best objective wins
    objective = torch.tensor([[-2.0, -0.5, -2.5], [-3.0, -1.0, -2.0]])
    rank = torch.tensor([[1, 2, 1], [4, 2, 3]])
    margin = torch.tensor([[0.1, -0.2, 0.4], [-2.0, -0.5, -1.0]])
    assert prompt_compute.success_first(objective, rank, margin).tolist() == [2, 1]


def test_gcg_restarts_without_progress_and_keeps_the_best_prompt():
    lm, bans = tiny_lm(LlamaConfig, LlamaForCausalLM), tiny_bans()
    params = SearchParams(prompt_len=4, max_steps=8, patience=1, top_k=2, n_candidates=2, n_slots=2, objective="margin")
    results = list(gcg_search(lm, [100, 150, 200], bans, params))
    assert any(r.restarts > 0 for r in results)  # two candidates of the top-2 swaps rarely improve every step
    for result in results:
        assert result.restarts < result.steps
        assert -result.trajectory[-1] == pytest.approx(result.margin)  # the result is the best prompt (by margin) of all restarts
        assert lm.score_ids(torch.tensor([result.prompt_ids]), torch.tensor([result.token_id]), 1).logprob.item() == pytest.approx(result.logprob, abs=1e-4)
        assert max(_rises(result), default=0.0) < 1e-6


def test_gcg_result_does_not_depend_on_batch_companions():
    lm, bans = tiny_lm(LlamaConfig, LlamaForCausalLM), tiny_bans()
    alone = next(gcg_search(lm, [150], bans, TINY_PARAMS))
    together = next(r for r in gcg_search(lm, [12, 150], bans, TINY_PARAMS) if r.token_id == 150)
    assert alone.prompt_ids == together.prompt_ids and alone.seed == together.seed


def test_continuous_keeps_the_best_projected_prompt_as_token_ids():
    lm, bans = tiny_lm(Gemma3TextConfig, Gemma3ForCausalLM), tiny_bans()
    results = list(continuous_search(lm, [12, 100, 150], bans, TINY_PARAMS))
    assert [r.token_id for r in results] == [12, 100, 150]
    for result, banned in zip(results, bans.masks([12, 100, 150])):
        assert not banned[result.prompt_ids].any()
        assert result.relaxed_logprob is not None and len(result.trajectory) == TINY_PARAMS.continuous_steps
        # the kept prompt is the best projection seen, re-scored as ids: a successful one, else the likeliest
        if result.rank > 1:
            assert -min(result.trajectory) == pytest.approx(result.logprob, abs=1e-4)
    assert any(r.rank == 1 for r in results) and any(r.rank > 1 for r in results)  # both cases are checked


def test_continuous_keeps_a_successful_projection_over_a_likelier_one():
    best_logprob, best_succeeded = torch.tensor([-1.0, -1.0, -3.0, -3.0]), torch.tensor([False, False, True, True])
    logprob, succeeded = torch.tensor([-2.0, -0.5, -0.5, -2.0]), torch.tensor([True, False, False, True])
    # success beats any log-prob; without a change in success the higher log-prob wins; a failure never replaces a success
    assert prompt_compute.beats(logprob, succeeded, best_logprob, best_succeeded).tolist() == [True, True, False, True]


def test_searches_run_in_bfloat16():
    lm = PromptLM(tiny_lm(LlamaConfig, LlamaForCausalLM).model.to(torch.bfloat16), prefix_ids=[1])
    assert lm.table.dtype == torch.bfloat16
    for search in (gcg_search, continuous_search):
        (result,) = search(lm, [100], tiny_bans(), TINY_PARAMS)
        assert result.logprob < 0 and not tiny_bans().masks([100])[0, result.prompt_ids].any()


# --- SmolLM2-135M ---------------------------------------------------------------------


@pytest.fixture
def catalog(smollm2: LoadedModel, tmp_path: Path) -> Engine:
    """A writable catalog with SmolLM2's tokens (no embedding statistics: the requested targets need none)."""
    with fresh_database(tmp_path) as url:
        engine = make_engine(url)
        ingest(SMOLLM2, engine, stages=("tokenizer_facts",), loaded=smollm2)
        yield engine
        engine.dispose()


def test_gcg_finds_prompt_for_common_token(smollm2: LoadedModel, smollm2_catalog: Engine):
    params = SearchParams(prompt_len=4, max_steps=6, top_k=32, n_candidates=16, n_slots=1)
    with Session(smollm2_catalog) as session:
        model = find_model(session, smollm2.name)
        bans = catalog_ban_rules(session, model, params, smollm2.embedding_rows, latest_run_id(session, model.id, "embedding_stats"))
    lm = PromptLM(smollm2.model, special_prefix_ids(smollm2.tokenizer))
    (result,) = gcg_search(lm, [THE], bans, params)
    assert result.rank == 1 and result.margin > 0
    assert lm.greedy_next_ids(torch.tensor([result.prompt_ids]))[0] == THE
    banned = bans.masks([THE])[0]
    assert not banned[result.prompt_ids].any()
    assert banned.sum() > 200  # ' the', 'the', 'there', 'other', ... and the 200 most anomalous tokens


def test_default_search_elicits_two_control_tokens(smollm2: LoadedModel, catalog: Engine, capsys: pytest.CaptureFixture):
    search = SearchParams(n_slots=2, methods=("gcg",), allow_anomalous=True)  # the default frame, prompt length, candidates and budget
    result = run_stage(catalog, PROMPTS, PromptParams(token_ids=(MARKS, MIG), search=search), loaded=smollm2)
    with Session(catalog) as session:
        rows = elicitability(session, smollm2.name)
        run = session.get(IngestRun, result.run_id)
    assert {r.token_id for r in rows} == {MARKS, MIG}
    for row in rows:
        assert row.elicited and row.best_rank == 1 and row.best_logprob < 0
        assert row.steps < search.max_steps and row.budget_steps == search.max_steps
    assert run.params["suffix_ids"] == frame_ids(smollm2.tokenizer, search)[1]
    with Session(catalog) as session:
        assert elicitability(session, smollm2.name, elicited=False) == []
        assert elicitability(session, smollm2.name, min_budget=search.max_steps + 1) == []
    assert main(["--db", catalog.url.render_as_string(hide_password=False), "prompt-results", "SmolLM2"]) == 0
    summary = capsys.readouterr().out.split()
    assert summary[summary.index("any") : summary.index("any") + 4] == ["any", "requested", "2/2", "(100%)"]


def test_continuous_projection_gives_every_target_its_own_prompt(smollm2: LoadedModel, smollm2_catalog: Engine):
    params = SearchParams(continuous_steps=6, n_slots=8)
    targets = [MARKS, MIG, THE, COMMA, 37396, 39905, 45175, 48047]  # controls, common tokens and two anomalous ones
    with Session(smollm2_catalog) as session:
        bans = _catalog_bans(session, smollm2, params)
    before, after = frame_ids(smollm2.tokenizer, params)
    lm = PromptLM(smollm2.model, special_prefix_ids(smollm2.tokenizer) + before, suffix_ids=after)
    prompts = [tuple(r.prompt_ids) for r in continuous_search(lm, targets, bans, params)]  # random starts: the projection alone must not collapse
    assert len(set(prompts)) == len(targets)  # no collapse onto the same hub tokens
    hub_share = max(Counter(i for p in prompts for i in p).values()) / sum(map(len, prompts))
    assert hub_share < 0.25  # no token fills a quarter of all positions


def test_spelled_pieces_spell_the_target_with_smaller_tokens(smollm2: LoadedModel, smollm2_catalog: Engine):
    with Session(smollm2_catalog) as session:
        bans = _catalog_bans(session, smollm2, SearchParams())
    pieces = spelled_pieces(smollm2.tokenizer, bans, [MARKS, 45175, COMMA])
    assert COMMA not in pieces  # one character: nothing smaller spells it
    for token_id in (MARKS, 45175):
        assert smollm2.tokenizer.decode(pieces[token_id]) == smollm2.tokenizer.decode([token_id])
        assert len(pieces[token_id]) >= 2 and all(smollm2.tokenizer.decode([i]).strip() for i in pieces[token_id])


def _catalog_bans(session: Session, smollm2: LoadedModel, params: SearchParams):
    model = find_model(session, smollm2.name)
    return catalog_ban_rules(session, model, params, smollm2.embedding_rows, latest_run_id(session, model.id, "embedding_stats"))


def test_results_land_in_sql_and_an_interrupted_run_resumes(smollm2: LoadedModel, catalog: Engine, monkeypatch: pytest.MonkeyPatch):
    search = SearchParams(prompt_len=4, max_steps=1, top_k=16, n_candidates=4, n_slots=2, continuous_steps=2, allow_anomalous=True)
    params = PromptParams(token_ids=(COMMA, THE), search=search)  # requested targets and no ban list: no statistics needed
    real_gcg, calls = prompt_compute.SEARCHES["gcg"], []

    def interrupt_second_chunk(*args, **kwargs):
        calls.append(args[1])
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_gcg(*args, **kwargs)

    monkeypatch.setitem(prompt_compute.SEARCHES, "gcg", interrupt_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_stage(catalog, PROMPTS, params, loaded=smollm2, chunk_size=1)  # one (method, target) per chunk
    monkeypatch.undo()
    with Session(catalog) as session:
        run = session.scalars(select(IngestRun).where(IngestRun.stage == "prompt_search")).one()
        assert run.status == "running" and run.n_rows == 1
        assert session.scalar(select(func.count()).select_from(PromptSearch)) == 1
        assert prompt_results(session, smollm2.name) == []  # rows of an unfinished run stay invisible

    resumed = run_stage(catalog, PROMPTS, params, loaded=smollm2, chunk_size=1)
    assert (resumed.run_id, resumed.status, resumed.detail, resumed.n_rows) == (run.id, "succeeded", f"resumed run {run.id}", 4)
    assert run_stage(catalog, PROMPTS, params, loaded=smollm2).status == "skipped"

    with Session(catalog) as session:
        run = session.get(IngestRun, run.id)
        assert run.params["search"]["prompt_len"] == 4 and run.params["search"]["n_candidates"] == 4
        assert run.params["targets"]["token_ids"] == [COMMA, THE]
        assert run.params["resolved_targets"] == [[COMMA, "requested"], [THE, "requested"]]
        rows = session.scalars(select(PromptSearch).where(PromptSearch.run_id == run.id)).all()
        results = prompt_results(session, smollm2.name)
    assert sorted((r.token_id, r.method) for r in rows) == [(COMMA, "continuous"), (COMMA, "gcg"), (THE, "continuous"), (THE, "gcg")]
    for row in rows:
        assert len(row.prompt_ids.split()) == 4 and row.steps <= 2 and row.anomalous_allowed
        assert row.budget_steps == (1 if row.method == "gcg" else 2) and row.restarts == 0
        assert row.prompt_text == smollm2.tokenizer.decode([int(i) for i in row.prompt_ids.split()])
        assert row.greedy_emits == (row.target_rank == 1)
        assert (row.relaxed_logprob is None) == (row.method == "gcg")
    assert {(r.token_id, r.method) for r in results} == {(r.token_id, r.method) for r in rows}


def test_cli_rejects_unknown_targets_without_touching_the_catalog(catalog: Engine, capsys: pytest.CaptureFixture):
    url = catalog.url.render_as_string(hide_password=False)
    assert main(["--db", url, "prompts", "SmolLM2", "--allow-anomalous", "--texts", "no such token here"]) == 2
    assert main(["--db", url, "prompts", "SmolLM2", "--allow-anomalous", "--tokens", "28,99999999"]) == 2
    assert main(["--db", url, "prompts", "SmolLM2"]) == 2
    assert main(["--db", url, "prompts", "SmolLM2", "--tokens", "28", "--frame", "Repeat: no slot"]) == 2
    assert main(["--db", url, "prompts", "SmolLM2", "--targets", "verified", "--top", "5"]) == 2  # not probed
    errors = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in errors] == ["error"] * 5
    with Session(catalog) as session:
        assert session.scalar(select(func.count()).select_from(IngestRun).where(IngestRun.stage == "prompt_search")) == 0
