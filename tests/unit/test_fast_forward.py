"""The exact shortcuts of ``memla_utils.editors.fast_forward`` against the full forwards they replace.

Suffix passes (prefix cache, per-row alignment, replayed lower layers, gathered head rows) must give the full
forward's logits, and ROME/MEMIT/PMET/FT-L with ``fast_forward=True`` must write the same weights as with
``fast_forward=False`` (the reference code path), up to float32 rounding, on several architectures.
"""
from __future__ import annotations

import pytest
import torch

from memla_utils.covariance import CorpusConfig, CovarianceConfig
from memla_utils.editors import make_editor
from memla_utils.editors.fast_forward import SuffixRunner, gather_head, split_rows
from memla_utils.mkeb.record import Record
from memla_utils.testing import tiny_model

pytestmark = pytest.mark.usefixtures("module_cache")

ARCHS = ("llama", "gpt2", "gemma3_text", "bloom")
COV = CovarianceConfig(corpus=CorpusConfig(source="model", languages=("en",), samples_per_language=2, sample_tokens=12),
                       n_samples=2)
#: as tests/unit/test_baselines.py (tiny random models need big steps), plus context prefixes of unequal length
LOCATE = dict(covariance=COV, n_context=2, context_tokens=4, v_steps=6, v_lr=1.0, clamp_norm_factor=50.0,
              v_weight_decay=0.01, early_stop_nll=0.0)
OVERRIDES = {"rome": LOCATE, "memit": dict(LOCATE, mom2_update_weight=10.0, layers=(1, 2)),
             "pmet": dict(LOCATE, mom2_update_weight=10.0, layers=(1, 2)), "ft-l": {"steps": 6, "layer": 1}}
#: max |fast - full| over the edited weights, relative to max |full delta| (float32 rounding, amplified a little by
#: Adam's normalisation over a few steps)
REL_TOL = 1e-4

REC = Record.from_dict({
    "example_id": "r0",
    "edit": {"en": {"prompt": "The capital of {} is", "subject": "France", "target_new": "Tokyo",
                    "target_true": "Paris"}},
    "paraphrase_prompts": {"en": ["France's capital city is"]},
    "neighborhood_prompts": {"en": ["The capital of Italy is"]}, "neighborhood_answers": {"en": ["Rome"]}})


@pytest.mark.parametrize("arch", ARCHS)
def test_suffix_runner_gives_the_full_forwards_logits(arch):
    lm = tiny_model(arch, n_layers=4)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (7, 20, 12, 3)]
    split = [3, 15, 0, 2]
    runner = SuffixRunner(lm.model, lm.adapter, split_rows(rows, split, pad_id=0), first=2)
    sel_r, sel_c, want = [], [], []
    for b, (r, s) in enumerate(zip(rows, split)):
        ids = torch.tensor([r])
        full = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        for p in range(s, len(r)):
            sel_r.append(b), sel_c.append(p - s), want.append(full[p])
    with torch.no_grad(), gather_head(lm.model, torch.tensor(sel_r), torch.tensor(sel_c)):
        recorded = runner.record().logits[0]
        replayed = runner.forward().logits[0]
    want = torch.stack(want)
    torch.testing.assert_close(recorded, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(replayed, recorded)  # replaying the recorded lower layers changes nothing


def edited_delta(lm, method: str, fast: bool) -> dict[str, torch.Tensor]:
    edit = make_editor(method, **OVERRIDES[method], fast_forward=fast).edit(lm, REC, "en")
    out = {n: edit.edited[n] - edit.originals[n] for n in edit.edited}
    edit.revert()
    return out


@pytest.mark.parametrize("arch", ("llama", "gpt2", "gemma3_text"))
@pytest.mark.parametrize("method", list(OVERRIDES))
def test_fast_path_writes_the_reference_paths_weights(arch, method):
    lm = tiny_model(arch, n_layers=4)
    full, fast = edited_delta(lm, method, False), edited_delta(lm, method, True)
    assert full.keys() == fast.keys()
    scale = max(float(d.abs().max()) for d in full.values())
    assert scale > 0
    worst = max(float((fast[n] - full[n]).abs().max()) for n in full)
    assert worst <= REL_TOL * scale, f"{method} on {arch}: max |fast - full| {worst:.3g} vs max |delta| {scale:.3g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_the_target_search_s_one_pass_head_gives_the_logits_loss_and_gradient(arch, monkeypatch):
    """The suffix objective projects the head once per step (head_logprob) for the project's architectures; its
    NLL, KL and gradient equal the log_softmax-of-logits objective (taken by the same function when the head
    cannot be deferred) up to float rounding."""
    from memla_utils.editors import locate_values
    from memla_utils.editors.locate import Request, context_prefixes

    lm = tiny_model(arch, n_layers=4)
    sites = [lm.adapter.down_proj(1)]
    request = Request(REC, "en")
    prefixes = ["", *context_prefixes(lm, 2, 4, 0)]

    def loss_and_grad():
        _, objective = locate_values._suffix_objective(lm, 1, request, prefixes, sites)
        delta = (torch.arange(lm.adapter.hidden_size, dtype=torch.float32) / 50.0).sin().requires_grad_(True)
        nll, kl = objective([delta])
        (nll + 3.0 * kl).backward()
        return objective.__name__, float(nll.detach()), float(kl.detach()), delta.grad

    name, nll, kl, grad = loss_and_grad()
    monkeypatch.setattr(locate_values, "fusable", lambda model: False)
    ref_name, ref_nll, ref_kl, ref_grad = loss_and_grad()
    assert (name, ref_name) == ("hidden_objective", "logits_objective")
    # KL as Σ q log q − Σ q log p: float32 cancellation of two sums of about the entropy (~6 nats here) leaves
    # ~1e-7 absolute (the loss's value only: its gradient is a separate sum, compared below)
    assert nll == pytest.approx(ref_nll, rel=1e-5) and kl == pytest.approx(ref_kl, rel=1e-4, abs=2e-6)
    assert ref_kl > 1e-5
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_layer_reads_replays_the_lower_layers_it_recorded_and_checks_what_it_may_skip():
    """MEMIT's window loop: a read that replays the layers an earlier read recorded gives the same bits while those
    layers are unchanged, and really skips them (a change there is not seen); impossible replays are refused."""
    from memla_utils.editors.locate_reads import Request, layer_reads

    lm = tiny_model("llama", n_layers=4)
    req, prefixes = [Request(REC, "en")], ["", "One. ", "Two words. "]
    down = lm.adapter.down_proj(3)
    first = layer_reads(lm, 2, 3, down, req, prefixes, record_below=2)
    assert len(first.lower) == 2 and all(out is not None for out in first.lower)
    again = layer_reads(lm, 2, 3, down, req, prefixes, replay=first.lower)
    for name in ("keys", "bare_keys", "outputs"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name
    assert again.lower == []  # nothing recorded unless asked
    weight = lm.adapter.down_proj(0).weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(1.5)  # a layer the replay skips ...
        stale = layer_reads(lm, 2, 3, down, req, prefixes, replay=first.lower)
        fresh = layer_reads(lm, 2, 3, down, req, prefixes)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert torch.equal(stale.keys, first.keys)  # ... is not seen through the replay
    assert not torch.equal(fresh.keys, first.keys)
    with pytest.raises(ValueError, match="only layers 0..2 finish"):
        layer_reads(lm, 2, 3, down, req, prefixes, record_below=4)
    with pytest.raises(ValueError, match="would skip layer 2"):
        layer_reads(lm, 2, 3, down, req, prefixes, replay=first.lower + [first.lower[-1]])


@pytest.mark.parametrize("layers", [(1, 2, 3), (2, 1), (3, 1, 2)])
def test_memit_s_window_in_any_order_writes_the_reference_paths_weights(layers):
    """The window loop replays, at each read, the layers below the one updated last: in any order of the layers.
    (Five layers: a window whose last layer is the model's top one has an answer loss that does not depend on the
    searched vector, whose Adam steps then follow float rounding noise on either path.)"""
    lm = tiny_model("llama", n_layers=5)
    cfg = dict(OVERRIDES["memit"], layers=layers)
    deltas = []
    for fast in (False, True):
        edit = make_editor("memit", **cfg, fast_forward=fast).edit(lm, REC, "en")
        deltas.append({n: edit.edited[n] - edit.originals[n] for n in edit.edited})
        edit.revert()
    full, fast = deltas
    scale = max(float(d.abs().max()) for d in full.values())
    worst = max(float((fast[n] - full[n]).abs().max()) for n in full)
    assert scale > 0 and worst <= REL_TOL * scale, (layers, worst, scale)
