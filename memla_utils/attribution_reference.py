"""The slow reference of the batched pass: the knowledge-neurons style loop, one layer at a time, full forward and
backward per batch of path points (:func:`attribute_prompt_loop`), for benchmarks and tests (same scores).

Source: memla4mke's ``garns.get_scores_for_layer`` (``AMIG/knowledge_neurons/garns.py``): chunks of
``batch_size`` points patched in (``patch.Patch``), the gradient of the answer token's probability (or of its log,
``target="logprob"``) at the last position, summed, times the original prompt's value / ``steps``, per
greedy-extended prompt; for ``"exact"`` the same loop with teacher forcing and ``(a - b)`` as multiplier
(:mod:`memla_utils.attribution`).
"""
from __future__ import annotations

import torch

from .attribution_config import AttributionConfig
from .attribution_ig import _alphas
from .attribution_prep import _point_hook, _prepare
from .models import LoadedModel


def attribute_prompt_loop(lm: LoadedModel, prompt: str, answer: str, language: str,
                          config: AttributionConfig | None = None, *, batch_size: int = 4) -> torch.Tensor:
    """The knowledge-neurons style computation the batched pass replaces (benchmark reference, same scores).

    One layer at a time, path points in batches of ``batch_size``, a full forward (all positions, full logits)
    and backward per batch, per answer token (for ``memla4mke``: per greedy-extended prompt, as
    ``garns.get_scores_for_layer``).
    """
    config = config or AttributionConfig()
    preps = _prepare(lm, prompt, answer, language, config)
    alphas, n_grad = _alphas(config)
    alphas = alphas[:n_grad]
    scores = torch.zeros(lm.adapter.n_layers, lm.adapter.n_neurons, dtype=torch.float32)
    for prep in preps:
        assert prep.acts is not None and prep.base is not None
        for t, (pos, target) in enumerate(zip(prep.positions, prep.targets)):
            ids = torch.tensor([prep.ids[: pos + 1]], device=lm.device)
            for l in range(lm.adapter.n_layers):
                a, b = prep.acts[t, l], prep.base[t, l]
                grad = torch.zeros(lm.adapter.n_neurons, dtype=torch.float32, device=lm.device)
                for chunk in alphas.split(batch_size):
                    x = (b + chunk.to(lm.device)[:, None] * (a - b)).to(lm.dtype).requires_grad_(True)

                    def patch(acts: torch.Tensor, x: torch.Tensor = x, pos: int = pos) -> torch.Tensor:
                        acts = acts.expand(x.shape[0], *acts.shape[1:]).clone()
                        acts[:, pos] = x
                        return acts

                    with _point_hook(lm, prep.method, l, patch), torch.enable_grad():
                        logits = lm.model(input_ids=ids.expand(len(chunk), -1)).logits[:, pos].float()
                        logp = torch.log_softmax(logits, -1)[:, target]
                        value = logp.exp() if config.target == "prob" else logp
                        (g,) = torch.autograd.grad(value.sum(), x)
                    grad += g.float().sum(0)
                mult = preps[0].acts[0, l] if config.method == "memla4mke" else a - b  # type: ignore[index]
                scores[l] += (mult * grad / config.steps).cpu()
    return scores
