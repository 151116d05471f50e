"""Probing SmolLM2-135M: normal words come back, under-trained pieces don't; sweep mode agrees with generate."""

import pytest
import torch

from ingest.compute.probes import (
    TEMPLATES_BY_NAME,
    Insertion,
    Prober,
    ProbeRecord,
    decoder_layers,
    embedding_scale,
    generate_probes,
    prefix_cache,
    render_prompt,
    slot_activations,
    sweep_probes,
    target_prob_and_rank,
)

NORMAL = ["Ġcat", "Ġhello"]
UNDERTRAINED = {"Ġfirstsum": 40264, "Ġpvproperty": 43420, "kinesisfirehose": 45691}
ECHO = TEMPLATES_BY_NAME["echo_fewshot"]
LIST = TEMPLATES_BY_NAME["continue_list"]


def _ids(tokenizer, pieces):
    return [tokenizer.convert_tokens_to_ids(piece) for piece in pieces]


def test_target_prob_and_rank_on_fixed_logits():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]]])  # [batch=1, steps=2, d_vocab=3]
    probs, ranks = target_prob_and_rank(logits, torch.tensor([1]))
    assert ranks.tolist() == [[2, 2]]
    assert probs[0, 0].item() == pytest.approx(torch.softmax(logits[0, 0], -1)[1].item())


def test_token_is_inserted_by_id_at_every_placeholder(smollm2):
    prompt = render_prompt(smollm2.tokenizer, LIST)
    unreachable = UNDERTRAINED["kinesisfirehose"]
    ids = prompt.ids(unreachable)
    assert ids.count(unreachable) == 3
    assert ids[: len(prompt.prefix)] == prompt.prefix
    assert smollm2.tokenizer.decode(prompt.prefix) == "Repeated:"


def test_chat_templates_are_rendered_with_the_models_chat_format(smollm2):
    prompt = render_prompt(smollm2.tokenizer, TEMPLATES_BY_NAME["repeat_chat"])
    assert "<|im_start|>user\nPlease repeat" in prompt.rendered
    assert prompt.rendered.endswith("<|im_start|>assistant\nText:")


def test_normal_words_are_repeated_and_undertrained_pieces_are_not(smollm2):
    tokenizer = smollm2.tokenizer
    normal = _ids(tokenizer, NORMAL)
    prompts = {t.name: render_prompt(tokenizer, t) for t in (ECHO, LIST)}
    pairs = [(token_id, template) for token_id in normal + list(UNDERTRAINED.values()) for template in (ECHO, LIST)]
    records = generate_probes(smollm2.model, tokenizer, prompts, pairs, positions=3, device="cpu")
    by_token: dict[int, list[float]] = {}
    for record in records:
        by_token.setdefault(record.token_id, []).append(record.target_prob)
    for token_id in normal:
        assert max(by_token[token_id]) > 0.5
    for token_id in UNDERTRAINED.values():
        assert max(by_token[token_id]) < 0.01
    echoed_cat = next(r for r in records if r.token_id == normal[0] and r.template is ECHO)
    assert echoed_cat.output_ids[0] == normal[0] and echoed_cat.target_rank == 1


def test_sweep_matches_full_forward_on_a_vocabulary_slice(smollm2):
    """Shared-prefix KV cache + last-position logits give the full prompt's next-token distribution."""
    tokenizer, model = smollm2.tokenizer, smollm2.model
    prompt = render_prompt(tokenizer, ECHO)
    token_ids = list(range(1000, 1064))
    records = sweep_probes(model, tokenizer, prompt, prefix_cache(model, prompt, "cpu"), token_ids, positions=1, device="cpu")
    full = torch.tensor([prompt.ids(t) for t in token_ids])
    with torch.no_grad():
        logits = model(input_ids=full).logits[:, -1:]
    probs, ranks = target_prob_and_rank(logits, torch.tensor(token_ids))
    assert [r.position_probs[0] for r in records] == pytest.approx(probs[:, 0].tolist(), abs=1e-4)
    assert [r.output_ids[0] for r in records] == logits[:, 0].argmax(-1).tolist()


def test_sweep_and_candidate_modes_give_the_same_greedy_start(smollm2):
    tokenizer = smollm2.tokenizer
    token_ids = _ids(tokenizer, NORMAL) + [UNDERTRAINED["Ġfirstsum"]]
    pairs = [(t, LIST) for t in token_ids]
    kwargs = dict(positions=3, batch_size=8, device="cpu")
    generated = Prober(smollm2.model, tokenizer, [LIST], mode="candidates", **kwargs).run(pairs)
    swept = Prober(smollm2.model, tokenizer, [LIST], mode="sweep", **kwargs).run(pairs)
    for a, b in zip(generated, swept, strict=True):
        assert a.output_ids[:3] == b.output_ids[:3]
        assert a.position_probs == pytest.approx(b.position_probs, abs=1e-4)


def test_settled_rows_stop_stepping_and_the_others_match_every_step(smollm2):
    """A row stops at the step where the target is predicted with p >= 0.1 (or at an end token); the others run all three steps unchanged."""
    tokenizer, model = smollm2.tokenizer, smollm2.model
    prompt = render_prompt(tokenizer, ECHO)
    prefix = prefix_cache(model, prompt, "cpu")
    token_ids = _ids(tokenizer, NORMAL) + list(UNDERTRAINED.values())
    every = sweep_probes(model, tokenizer, prompt, prefix, token_ids, positions=3, device="cpu")
    early = sweep_probes(model, tokenizer, prompt, prefix, token_ids, positions=3, device="cpu", settled_prob=0.1)
    for full, cut in zip(every, early, strict=True):
        steps = len(cut.position_probs)
        assert cut.position_probs == pytest.approx(full.position_probs[:steps], abs=1e-4)
        assert cut.output_ids == full.output_ids[:steps]
        if steps < len(full.position_probs):
            assert cut.settled(0.1) and not ProbeRecord(0, ECHO, [], cut.position_probs[:-1], cut.position_ranks[:-1]).settled(0.1)
    assert [len(r.position_probs) for r in early[:2]] == [1, 1]  # ' cat' and ' hello' come back at once
    ends = {tokenizer.eos_token_id}
    assert all(len(r.position_probs) == 3 or r.settled(0.1) or r.output_ids[-1] in ends for r in early)
    assert not any(r.settled(0.1) for r in early[2:])  # under-trained pieces never come back


def test_sweep_until_settled_skips_later_templates_only_for_settled_tokens_and_never_for_controls(smollm2):
    tokenizer = smollm2.tokenizer
    cat, hello = _ids(tokenizer, NORMAL)
    broken = list(UNDERTRAINED.values())
    prober = Prober(smollm2.model, tokenizer, [ECHO, LIST], mode="sweep", positions=3, batch_size=8, device="cpu", settled_prob=0.1)
    records = prober.sweep_until_settled([cat, hello, *broken], [ECHO, LIST], every_template={hello})
    templates = {}
    for record in records:
        templates.setdefault(record.token_id, []).append(record.template.name)
    assert templates[cat] == ["echo_fewshot"]
    assert templates[hello] == ["echo_fewshot", "continue_list"]
    assert all(templates[t] == ["echo_fewshot", "continue_list"] for t in broken)
    every = Prober(smollm2.model, tokenizer, [ECHO, LIST], mode="sweep", positions=3, batch_size=8, device="cpu").run(
        [(t, template) for t in [cat, hello, *broken] for template in (ECHO, LIST)]
    )
    best = lambda rs, t: max(r.target_prob for r in rs if r.token_id == t)  # noqa: E731
    for token_id in broken:  # undecided tokens: the same maximum as probing everything
        assert best(records, token_id) == pytest.approx(best(every, token_id), abs=1e-4)
    assert best(records, cat) >= 0.1 and best(every, cat) >= 0.1


def test_sweep_cache_handles_sliding_window_layers(smollm2):
    """A tiny random Gemma-3 whose sliding window (4) is shorter than the prompt: the expanded prefix cache still matches."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=smollm2.tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )
    model = Gemma3ForCausalLM(config).eval()
    prompt = render_prompt(smollm2.tokenizer, ECHO)
    token_ids = list(range(1000, 1016))
    records = sweep_probes(model, smollm2.tokenizer, prompt, prefix_cache(model, prompt, "cpu"), token_ids, positions=2, device="cpu")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt.ids(t) for t in token_ids])).logits[:, -1:]
    probs, _ = target_prob_and_rank(logits, torch.tensor(token_ids))
    assert [r.position_probs[0] for r in records] == pytest.approx(probs[:, 0].tolist(), rel=1e-4)
    assert [r.output_ids[0] for r in records] == logits[:, 0].argmax(-1).tolist()


# --- vectors in the token slots (nokens) ---------------------------------------------------


def _probe_both_ways(smollm2, token_ids, templates, insertion):
    tokenizer = smollm2.tokenizer
    prompts = {t.name: render_prompt(tokenizer, t) for t in templates}
    pairs = [(token_id, template) for token_id in token_ids for template in templates]
    plain = generate_probes(smollm2.model, tokenizer, prompts, pairs, positions=3, device="cpu", keep_first_step=True)
    inserted = generate_probes(smollm2.model, tokenizer, prompts, pairs, positions=3, device="cpu", insertion=insertion(pairs), keep_first_step=True)
    return plain, inserted


def _assert_same_probes(plain, inserted):
    for a, b in zip(plain, inserted, strict=True):
        assert a.output_ids == b.output_ids
        assert a.position_ranks == b.position_ranks
        assert torch.allclose(a.first_step_logprobs, b.first_step_logprobs, atol=1e-4)


def test_a_tokens_own_embedding_as_a_noken_reproduces_its_probes(smollm2):
    """Normal and under-trained tokens alike: the input-embedding path is the id path."""
    token_ids = _ids(smollm2.tokenizer, NORMAL) + list(UNDERTRAINED.values())
    embeddings = smollm2.input_embeddings()
    plain, inserted = _probe_both_ways(
        smollm2, token_ids, (ECHO, LIST), lambda pairs: Insertion(embeddings[[t for t, _ in pairs]])
    )
    _assert_same_probes(plain, inserted)
    assert max(r.target_prob for r in inserted if r.token_id == token_ids[0]) > 0.5


def test_residual_insertions_that_change_nothing_reproduce_the_probes(smollm2):
    """Layer 0 replaced by the embedding, and a zero vector added at layer 5, leave every probe as it was."""
    token_ids = _ids(smollm2.tokenizer, NORMAL) + [UNDERTRAINED["Ġfirstsum"]]
    embeddings = smollm2.input_embeddings()
    _assert_same_probes(*_probe_both_ways(smollm2, token_ids, (ECHO, LIST), lambda pairs: Insertion(embeddings[[t for t, _ in pairs]], layer=0)))
    zero = lambda pairs: Insertion(torch.zeros(len(pairs), embeddings.shape[1]), layer=5, mode="add")  # noqa: E731
    _assert_same_probes(*_probe_both_ways(smollm2, token_ids, (ECHO, LIST), zero))


def test_a_tokens_own_slot_activation_put_back_at_layer_5_reproduces_its_probe(smollm2):
    tokenizer = smollm2.tokenizer
    token_ids = _ids(tokenizer, NORMAL)
    activations = slot_activations(smollm2.model, render_prompt(tokenizer, ECHO), token_ids, 5, batch_size=4, device="cpu")
    assert activations.shape == (len(token_ids), smollm2.model.config.hidden_size)
    _assert_same_probes(*_probe_both_ways(smollm2, token_ids, (ECHO,), lambda pairs: Insertion(activations, layer=5)))


def test_a_different_vector_in_the_slot_changes_the_output(smollm2):
    """The insertion is real: the embedding of ' hello' in the slot of ' cat' makes the model echo ' hello'."""
    tokenizer = smollm2.tokenizer
    cat, hello = _ids(tokenizer, NORMAL)
    prompts = {ECHO.name: render_prompt(tokenizer, ECHO)}
    [record] = generate_probes(
        smollm2.model, tokenizer, prompts, [(cat, ECHO)], positions=3, device="cpu", insertion=Insertion(smollm2.input_embeddings()[[hello]])
    )
    assert record.output_ids[0] == hello and record.target_rank > 1


def test_decoder_layers_and_embedding_scale_of_smollm2(smollm2):
    assert len(decoder_layers(smollm2.model)) == smollm2.model.config.num_hidden_layers == 30
    assert embedding_scale(smollm2.model) == 1.0


def test_magikarp_templates_put_the_token_in_every_slot_of_their_prompts(smollm2):
    from ingest.compute.probes import MAGIKARP_TEMPLATES, TEMPLATE_SETS

    assert TEMPLATE_SETS["magikarp"] == tuple(t.name for t in MAGIKARP_TEMPLATES)
    prompts = {t.name: render_prompt(smollm2.tokenizer, t) for t in MAGIKARP_TEMPLATES}
    token = UNDERTRAINED["kinesisfirehose"]
    assert [prompts[name].ids(token).count(token) for name in TEMPLATE_SETS["magikarp"]] == [41, 1, 101]
    echo = smollm2.tokenizer.decode(prompts["magikarp_input_output"].ids(smollm2.tokenizer.convert_tokens_to_ids("Ġcat")))
    assert echo.endswith("Input: « cat»\nOutput: «") and echo.count("Output: « cat»") == 20
    assert all(t.max_new_tokens == 3 and not t.chat for t in MAGIKARP_TEMPLATES)
