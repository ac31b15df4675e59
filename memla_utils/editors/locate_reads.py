"""What the locate-then-edit methods (:mod:`memla_utils.editors.locate`) read from the unedited model.

A :class:`Request` is one fact to write (a record in one language); it is written at the subject's last token
(:func:`subject_head`, :func:`subject_last_position`), under the bare prompt and a few short model-generated
prefixes (:func:`context_prefixes`, ROME's "context templates"). At that token: the *keys* (down-projection
inputs, :func:`compute_keys`) and a module's *outputs* (:func:`read_outputs`), or both from one early-stopped
forward (:func:`layer_reads`). Re-exported by :mod:`memla_utils.editors.locate`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..cache import ArtifactCache, cache_key
from ..covariance import sample_texts
from ..mkeb.record import Record
from ..mkeb.subjects import find_subject
from ..models import LoadedModel
from ..text import encode_prompt, pad_prompts
from .base import EditError
from .fast_forward import record_layers, replay_layers, run_until


# ------------------------------------------------------------------------------------------ prompts and positions
@dataclass(frozen=True)
class Request:
    """One fact to write: a record in one language."""

    record: Record
    language: str

    @property
    def view(self):
        return self.record.for_language(self.language)


def subject_head(record: Record, language: str) -> str:
    """The filled prompt up to and including the subject (its slot, else its first whole-word occurrence).

    Raises ``EditError`` naming the record, language, subject and prompt when the subject is empty or does not
    occur in the prompt (:func:`memla_utils.mkeb.subjects.find_subject`: whole words in spaced scripts,
    substrings in zh/ja/th): these methods write the fact at the subject's last token, and editing at some other
    token instead would be a silent, different edit.
    """
    e = record.edit[language]
    tmpl = e.prompt
    if "{}" in tmpl and e.subject.strip():
        return tmpl[: tmpl.index("{}")] + e.subject
    i = find_subject(tmpl, e.subject, language) if e.subject.strip() else -1
    if i < 0:
        why = "has no subject" if not e.subject.strip() else "does not occur as a whole word in its prompt"
        raise EditError(f"record {record.example_id!r}, language {language!r}: subject {e.subject!r} {why} "
                        f"{tmpl!r}; ROME, MEMIT and PMET edit at the subject's last token and cannot place this "
                        f"edit (give the prompt a '{{}}' slot or a subject spelled as in the prompt)")
    return tmpl[: i + len(e.subject)]


def subject_last_position(tokenizer, request: Request, prefix: str = "") -> int:
    """Index of the subject's last token in ``encode_prompt(prefix + filled prompt)``; ``EditError`` if the
    prompt does not contain the subject (:func:`subject_head`)."""
    e = request.record.edit[request.language]
    head = subject_head(request.record, request.language)
    n_full = len(encode_prompt(tokenizer, prefix + e.filled_prompt))
    return min(len(encode_prompt(tokenizer, prefix + head)), n_full) - 1


def context_prefixes(lm: LoadedModel, n: int, tokens: int, seed: int, *,
                     cache: ArtifactCache | None = None) -> list[str]:
    """``""`` plus ``n`` short seeded samples from the model, each followed by ``". "`` (ROME's templates)."""
    if n <= 0:
        return [""]
    cache = cache or ArtifactCache()
    key = cache_key("contexts", model=lm.fingerprint, n=n, tokens=tokens, seed=seed)
    hit = cache.get_json(key)
    if hit is None:
        texts = sample_texts(lm, [""], n_per_starter=n, max_new_tokens=tokens, top_k=5, seed=seed)
        hit = [" ".join(t.split()) + ". " for t in texts]
        cache.put_json(key, hit)
    return [""] + list(hit)


@contextmanager
def _capture_output(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    box: dict[str, torch.Tensor] = {}

    def hook(mod: nn.Module, args: tuple, out: Any) -> None:
        box["out"] = out[0] if isinstance(out, tuple) else out

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@torch.no_grad()
def compute_keys(lm: LoadedModel, layer: int, requests: Sequence[Request], prefixes: Sequence[str]) -> torch.Tensor:
    """Keys ``[N, n_neurons]`` (float64): down-projection inputs at the subject's last token, mean over prefixes."""
    prompts = [p + r.view.prompt for r in requests for p in prefixes]
    pos = torch.tensor([subject_last_position(lm.tokenizer, r, p) for r in requests for p in prefixes])
    ids, att = pad_prompts(lm.tokenizer, prompts, side="right")
    with lm.adapter.neuron_hook(layer, capture=True) as probe:
        lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), logits_to_keep=1)
    acts = probe.activations[torch.arange(len(prompts)), pos.to(probe.activations.device)]
    return acts.to(torch.float64).cpu().reshape(len(requests), len(prefixes), -1).mean(1)


@torch.no_grad()
def read_outputs(lm: LoadedModel, module: nn.Module, requests: Sequence[Request]) -> torch.Tensor:
    """``module``'s output ``[N, hidden]`` (float64) at the subject's last token of each bare prompt."""
    prompts = [r.view.prompt for r in requests]
    pos = torch.tensor([subject_last_position(lm.tokenizer, r) for r in requests])
    ids, att = pad_prompts(lm.tokenizer, prompts, side="right")
    with _capture_output(module) as box:
        lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), logits_to_keep=1)
    out = box["out"]
    return out[torch.arange(len(prompts)), pos.to(out.device)].to(torch.float64).cpu()


# ------------------------------------------------------------------------------------------ keys and outputs, fast
@dataclass
class LayerReads:
    """What one forward reads for a key/value solve (all float64, on CPU).

    ``keys [N, n_neurons]``: mean over prefixes of the down-projection input at ``layer`` (:func:`compute_keys`);
    ``bare_keys [N, n_neurons]``: the same on the bare prompt; ``outputs [N, hidden]``: ``module``'s output at
    the bare prompt's subject token (:func:`read_outputs`); ``lower``: the outputs of decoder layers
    ``0..record_below-1`` in that forward (for the next call's ``replay``; empty unless asked for).
    """

    keys: torch.Tensor
    bare_keys: torch.Tensor
    outputs: torch.Tensor
    lower: list[Any] = field(default_factory=list)


@torch.no_grad()
def layer_reads(lm: LoadedModel, layer: int, module_layer: int, module: nn.Module, requests: Sequence[Request],
                prefixes: Sequence[str], replay: Sequence[Any] = (), record_below: int = 0) -> LayerReads:
    """:func:`compute_keys` (with and without prefixes) and :func:`read_outputs` of ``module`` (which belongs
    to decoder layer ``module_layer``) from one forward over the prefixed prompts, stopped once both layers ran.

    ``replay``: the outputs of layers ``0..len(replay)-1`` recorded by an earlier call on the same ``requests``
    and ``prefixes`` (:attr:`LayerReads.lower` with ``record_below``), valid while nothing in those layers has
    changed since (:func:`.fast_forward.replay_layers`); those layers then compute nothing, and the values are the
    same bits. MEMIT's loop over its window uses it: after the update of layer ``l`` only layers ``>= l`` change,
    so the next read replays ``0..l-1`` (``record_below=l``).
    """
    top = max(layer, module_layer)  # the forward stops inside this layer: layers below it run to their output
    if not 0 <= record_below <= top:
        raise ValueError(f"layer_reads: record_below={record_below}: only layers 0..{top - 1} finish in a forward "
                         f"stopped at layer {top}")
    if len(replay) > min(layer, module_layer):
        raise ValueError(f"layer_reads: {len(replay)} replayed layers would skip layer {min(layer, module_layer)}, "
                         "which this call reads")
    groups = list(dict.fromkeys([""] + list(prefixes)))
    bare, idx = groups.index(""), [groups.index(p) for p in prefixes]
    prompts = [p + r.view.prompt for r in requests for p in groups]
    pos = torch.tensor([subject_last_position(lm.tokenizer, r, p) for r in requests for p in groups])
    ids, att = pad_prompts(lm.tokenizer, prompts, side="right")
    stop = module if module_layer >= layer else lm.adapter.down_proj(layer)
    with ExitStack() as stack:
        probe = stack.enter_context(lm.adapter.neuron_hook(layer, capture=True))
        box = stack.enter_context(_capture_output(module))
        lower = stack.enter_context(record_layers(lm.adapter, record_below))
        if replay:
            stack.enter_context(replay_layers(lm.adapter, replay))
        run_until(lm.model, stop, input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), logits_to_keep=1,
                  use_cache=False)
    rows = torch.arange(len(prompts))
    acts = probe.activations[rows, pos.to(probe.activations.device)].to(torch.float64).cpu()
    acts = acts.reshape(len(requests), len(groups), -1)
    out = box["out"][rows, pos.to(box["out"].device)].to(torch.float64).cpu().reshape(len(requests), len(groups), -1)
    return LayerReads(keys=acts[:, idx].mean(1), bare_keys=acts[:, bare], outputs=out[:, bare], lower=list(lower))


__all__ = ["LayerReads", "Request", "compute_keys", "context_prefixes", "layer_reads", "read_outputs", "subject_head",
           "subject_last_position"]
