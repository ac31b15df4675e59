"""The exact attribution (method="exact") equals a brute-force integrated-gradients reference on tiny models of
every architecture; records, thresholds and the cache (both methods). The memla4mke variant has its own file."""
from __future__ import annotations

import pytest
import torch

from memla_utils.attribution import (
    AttributionConfig,
    attribute_batch,
    attribute_prompt,
    knowledge_neurons,
    neurons_from_attributions,
    record_attributions,
    record_items,
    threshold_scores,
)
from memla_utils.cache import ArtifactCache
from memla_utils.mkeb.record import EditTarget, Record, RecordError
from memla_utils.models import wrap_model
from memla_utils.testing import TINY_ARCHITECTURES, tiny_config, tiny_model, tiny_tokenizer
from memla_utils.text import encode_answer, encode_prompt

PROMPT, ANSWER = "The capital of Japan is", "Tokyo"



@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def lm(request):
    return tiny_model(request.param)


def brute_force(lm, prompt: str, answer: str, language: str, steps: int, baseline: str, target: str) -> torch.Tensor:
    """Simplest possible IG: per answer token, per layer, per step one full forward with that layer patched."""
    tok, model, adapter = lm.tokenizer, lm.model, lm.adapter
    p_ids = encode_prompt(tok, prompt)
    a_ids = encode_answer(tok, answer, language, prompt)
    full = p_ids + a_ids
    scores = torch.zeros(adapter.n_layers, adapter.n_neurons, dtype=torch.float64)

    def acts_at(ids: list[int], layer: int, pos: int) -> torch.Tensor:
        with adapter.neuron_hook(layer, capture=True) as probe, torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        return probe.activations[0, pos].double()

    for i, tgt in enumerate(a_ids):
        pos = len(p_ids) - 1 + i
        ids = full[: pos + 1]
        for layer in range(adapter.n_layers):
            a = acts_at(ids, layer, pos)
            if baseline == "zero":
                b = torch.zeros_like(a)
            else:
                copies = []
                for j, t in enumerate(ids):
                    if t in tok.all_special_ids:
                        continue
                    c = list(ids)
                    c[j] = tok.eos_token_id
                    copies.append(acts_at(c, layer, pos))
                b = torch.stack(copies).mean(0)
            grad = torch.zeros_like(a)
            for alpha in torch.linspace(0, 1, steps, dtype=torch.float64):
                x = (b + alpha * (a - b)).float().requires_grad_(True)

                def patch(acts, x=x, pos=pos):
                    acts = acts.clone()
                    acts[0, pos] = x
                    return acts

                with adapter.neuron_hook(layer, patch), torch.enable_grad():
                    logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, pos].float(), -1)[tgt]
                    value = logp.exp() if target == "prob" else logp
                    (g,) = torch.autograd.grad(value, x)
                grad += g.double()
            scores[layer] += (a - b) * grad / steps
    return scores.float()


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = float(want.abs().max())
    assert scale > 0, "reference attribution is all zeros: the test would be vacuous"
    torch.testing.assert_close(got, want, atol=2e-4 * scale, rtol=1e-3)


@pytest.mark.parametrize("baseline", ["eos_mean", "zero"])
def test_matches_brute_force(lm, baseline):
    cfg = AttributionConfig(method="exact", steps=4, baseline=baseline)
    got = attribute_prompt(lm, PROMPT, ANSWER, "en", cfg)
    assert got.dtype == torch.float32 and got.shape == (lm.adapter.n_layers, lm.adapter.n_neurons)
    assert_close(got, brute_force(lm, PROMPT, ANSWER, "en", 4, baseline, "prob"))



def test_answer_is_multi_token(lm):
    """The fixtures exercise teacher forcing: the answer spans several tokens."""
    assert len(encode_answer(lm.tokenizer, ANSWER, "en", PROMPT)) > 1


def test_logprob_target_matches_brute_force():
    lm = tiny_model("llama")
    got = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(method="exact", steps=3, target="logprob"))
    assert_close(got, brute_force(lm, PROMPT, ANSWER, "en", 3, "eos_mean", "logprob"))


def test_baselines_differ():
    lm = tiny_model("gemma3_text")
    eos = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(steps=3, baseline="eos_mean"))
    zero = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(steps=3, baseline="zero"))
    assert not torch.allclose(eos, zero, atol=1e-6)


@pytest.mark.parametrize("method", ["exact", "memla4mke"])
def test_batched_prompts_and_chunks_equal_single_prompts(method):
    """Prompts of different lengths/languages in one batch, split into odd chunks, give the same scores."""
    lm = tiny_model("qwen2")
    items = [(PROMPT, ANSWER, "en"), ("日本的首都是", "東京", "zh"), ("La capitale de la Pologne est", "Varsovie", "fr")]
    single = [attribute_prompt(lm, *item, AttributionConfig(method=method, steps=3)) for item in items]
    batched = attribute_batch(lm, items, AttributionConfig(method=method, steps=3, max_rows=7))
    for s, b in zip(single, batched):
        assert_close(b.scores, s)


def test_softcapped_logits_match_brute_force():
    """Gemma-2 style final logit soft-capping goes through the chunked projection exactly."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("gemma3_text")
    config.final_logit_softcapping = 2.0
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    for p in model.parameters():
        if p.dim() == 2:
            p.data.normal_(0.0, 0.2)
    lm = wrap_model(model, tiny_tokenizer(), "tiny-softcap")
    got = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(method="exact", steps=3, vocab_chunk=100))
    assert_close(got, brute_force(lm, PROMPT, ANSWER, "en", 3, "eos_mean", "prob"))


def test_completeness_improves_with_steps():
    """Sum of a layer's scores -> F(actual) - F(baseline) as the Riemann sum refines."""
    lm = tiny_model("llama")
    coarse = attribute_batch(lm, [(PROMPT, ANSWER, "en")], AttributionConfig(method="exact", steps=3))[0]
    fine = attribute_batch(lm, [(PROMPT, ANSWER, "en")], AttributionConfig(method="exact", steps=200))[0]
    assert fine.completeness_error < 0.02
    assert fine.completeness_error < coarse.completeness_error
    assert float(fine.deltas.abs().max()) > 0


def test_bfloat16_model_gives_float32_scores_close_to_float32():
    lm32, lm16 = tiny_model("llama"), tiny_model("llama", dtype=torch.bfloat16)
    s32 = attribute_prompt(lm32, PROMPT, ANSWER, "en", AttributionConfig(steps=3))
    s16 = attribute_prompt(lm16, PROMPT, ANSWER, "en", AttributionConfig(steps=3))
    assert s16.dtype == torch.float32
    corr = torch.corrcoef(torch.stack([s32.flatten(), s16.flatten()]))[0, 1]
    assert corr > 0.9


def test_same_config_same_numbers():
    lm = tiny_model("gpt2")
    a = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(steps=3))
    b = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(steps=3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, field", [({"steps": 1}, "steps"), ({"baseline": "mask"}, "baseline"),
                                           ({"target": "logit"}, "target"), ({"threshold": 1.5}, "threshold"),
                                           ({"answer": "false"}, "answer"), ({"max_rows": 0}, "max_rows"),
                                           ({"method": "garns"}, "method"),
                                           ({"vocab_chunk": 0}, "vocab_chunk")])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"AttributionConfig.{field}"):
        AttributionConfig(**kwargs)


# ----------------------------------------------------------------------------------------- records, thresholds
def make_record(target_true: str | None = "Tokyo", example_id: str = "r1") -> Record:
    return Record(example_id=example_id, relation_description="capital",
                  edit={"en": EditTarget("The capital of {} is", "Japan", "Kyoto", target_true),
                        "zh": EditTarget("{}的首都是", "日本", "京都", "東京" if target_true else None)},
                  paraphrase_prompts={"en": ["Japan's capital city is", "The capital of Japan is"]})


def test_record_items_union_of_prompts_and_answer_fallback(caplog):
    items = record_items(make_record(), "en", AttributionConfig())
    assert items == [("The capital of Japan is", "Tokyo", "en"), ("Japan's capital city is", "Tokyo", "en")]
    assert record_items(make_record(), "en", AttributionConfig(use_paraphrases=False)) == items[:1]
    assert record_items(make_record(), "en", AttributionConfig(answer="new"))[0][1] == "Kyoto"
    with caplog.at_level("WARNING"):
        fallback = record_items(make_record(target_true=None), "zh", AttributionConfig())
    assert fallback == [("日本的首都是", "京都", "zh")]
    assert "no target_true" in caplog.text
    with pytest.raises(RecordError, match="'r1'.*'de'"):
        record_items(make_record(), "de", AttributionConfig())


def test_threshold_keeps_scores_above_share_of_max():
    scores = torch.tensor([[0.1, 1.0, 0.31], [-2.0, 0.3, 0.5]])
    assert threshold_scores(scores, 0.3).tolist() == [[False, True, True], [False, False, True]]
    assert not threshold_scores(-scores.abs(), 0.3).any()


def test_knowledge_neurons_union_over_prompts_and_cache(tmp_path):
    lm = tiny_model("llama")
    cache = ArtifactCache(tmp_path)
    cfg = AttributionConfig(steps=3)
    record = make_record()
    first = record_attributions(lm, record, "en", cfg, cache)["en"]
    n_files = len(list(tmp_path.rglob("*.safetensors")))
    assert n_files == 2  # one per prompt
    masks = knowledge_neurons(lm, record, "en", cfg, cache)
    assert len(list(tmp_path.rglob("*.safetensors"))) == n_files  # second call: all hits, nothing written
    union = threshold_scores(first[0].scores, 0.3) | threshold_scores(first[1].scores, 0.3)
    assert masks.to_sets() == {l: set(torch.nonzero(union[l]).flatten().tolist())
                               for l in range(union.shape[0]) if union[l].any()}
    assert masks.n_neurons == lm.adapter.n_neurons and masks.total > 0
    # a cache hit returns exactly the stored numbers
    again = record_attributions(lm, record, "en", cfg, cache)["en"]
    assert torch.equal(again[0].scores, first[0].scores)
    # threshold does not change the key (thresholding is recomputed from cached scores) ...
    knowledge_neurons(lm, record, "en", AttributionConfig(steps=3, threshold=0.5), cache)
    assert len(list(tmp_path.rglob("*.safetensors"))) == n_files
    # ... but steps, baseline and target do
    knowledge_neurons(lm, record, "en", AttributionConfig(steps=4, use_paraphrases=False), cache)
    assert len(list(tmp_path.rglob("*.safetensors"))) == n_files + 1
    # ... and so does the method: the two variants never share a cache entry
    exact = record_attributions(lm, record, "en", AttributionConfig(method="exact", steps=3), cache)["en"]
    assert len(list(tmp_path.rglob("*.safetensors"))) == n_files + 3
    assert not torch.allclose(exact[0].scores, first[0].scores)


def test_cache_hit_computes_nothing(tmp_path, monkeypatch):
    import memla_utils.attribution_records as attribution_records  # where record_attributions looks it up

    lm = tiny_model("gpt2")
    cache = ArtifactCache(tmp_path)
    knowledge_neurons(lm, make_record(), "zh", AttributionConfig(steps=3), cache)

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(attribution_records, "attribute_batch", boom)
    knowledge_neurons(lm, make_record(), "zh", AttributionConfig(steps=3), cache)


def test_neurons_from_attributions_requires_input():
    with pytest.raises(ValueError, match="no attributions"):
        neurons_from_attributions([], 0.3)


@pytest.mark.parametrize("method", ["exact", "memla4mke"])
def test_loop_reference_equals_batched(lm, method):
    """The benchmark's knowledge-neurons style loop computes the same quantity."""
    from memla_utils.attribution import attribute_prompt_loop

    cfg = AttributionConfig(method=method, steps=5)
    assert_close(attribute_prompt_loop(lm, PROMPT, ANSWER, "en", cfg, batch_size=2),
                 attribute_prompt(lm, PROMPT, ANSWER, "en", cfg))


@pytest.mark.parametrize("method", ["exact", "memla4mke"])
def test_unsupported_logit_scaling_is_a_clear_error(method):
    """A model whose logits are not lm_head(hidden) is refused, not silently mis-attributed (memla4mke computes the
    model's logits for the first answer token's prompt only: the check still runs)."""
    lm = tiny_model("llama")
    handle = lm.model.get_output_embeddings().register_forward_hook(lambda m, a, out: out * 2.0)
    try:
        with pytest.raises(RuntimeError, match="logits are not lm_head"):
            attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(method=method, steps=2))
    finally:
        handle.remove()


def test_a_head_fed_something_else_than_the_decoder_output_is_a_clear_error():
    """The batched pass projects the decoder's final hidden state: a model whose head reads anything else
    (here: a transformed input) is refused by name."""
    lm = tiny_model("llama")
    head = lm.model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda m, args: (args[0] * 2.0,))
    try:
        with pytest.raises(RuntimeError, match="head's input is not the decoder's final hidden state"):
            attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(steps=2))
    finally:
        handle.remove()


def test_a_passed_part_deadline_stops_new_attribution_but_not_cache_hits(tmp_path, monkeypatch):
    """batch --hours: once the part's deadline has passed, record_attributions computes nothing new (it raises
    DeadlineReached naming the record) while cached records are still read; without a deadline it runs."""
    import time as _time

    from memla_utils.run_parts import DEADLINE_ENV, DeadlineReached

    lm = tiny_model("llama")
    cache = ArtifactCache(tmp_path)
    cfg = AttributionConfig(steps=3)
    record = make_record()
    first = record_attributions(lm, record, "en", cfg, cache)["en"]  # cached before the deadline
    monkeypatch.setenv(DEADLINE_ENV, str(_time.time() - 1))
    again = record_attributions(lm, record, "en", cfg, cache)["en"]
    assert torch.equal(again[0].scores, first[0].scores)
    n_files = len(list(tmp_path.rglob("*.safetensors")))
    with pytest.raises(DeadlineReached, match=repr(record.example_id)):
        record_attributions(lm, record, "zh", cfg, cache)
    assert len(list(tmp_path.rglob("*.safetensors"))) == n_files  # nothing computed after the deadline
    monkeypatch.setenv(DEADLINE_ENV, str(_time.time() + 3600))
    assert record_attributions(lm, record, "zh", cfg, cache)["zh"]


def test_a_prompts_scores_do_not_depend_on_what_else_is_cached(tmp_path):
    """Order, resuming and partial caches never change a number: a prompt's scores are the same bits whether
    its record's other languages were attributed with it, before it, or not at all."""
    lm = tiny_model("gemma3_text")
    cfg = AttributionConfig(steps=3)
    record = make_record()
    together = record_attributions(lm, record, ["en", "zh"], cfg, ArtifactCache(tmp_path / "a"))
    partial = ArtifactCache(tmp_path / "b")
    zh_first = record_attributions(lm, record, "zh", cfg, partial)["zh"]
    resumed = record_attributions(lm, record, ["en", "zh"], cfg, partial)
    alone = record_attributions(lm, record, "en", cfg, ArtifactCache(tmp_path / "c"))["en"]
    for a, b, c in zip(together["en"], resumed["en"], alone):
        assert torch.equal(a.scores, b.scores) and torch.equal(a.scores, c.scores)
    for a, b in zip(together["zh"], zh_first):
        assert torch.equal(a.scores, b.scores)
