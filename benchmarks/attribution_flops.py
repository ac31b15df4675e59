"""FLOPs of one (record, language) attribution and the machine's matrix-multiply rate (the floor of its time).

Counted per *row* (one prompt x answer token x scaled layer x path point, see ``memla_utils.attribution``), in
multiply-adds x 2, matrix products only (attention over a ~10-token context, norms and activations are < 1 %):

- body forward: the decoder layers the row runs through (the scaled one and those above), ``2 x P`` each, with
  ``P`` the weights of one decoder layer's matrix products;
- body backward: gradients w.r.t. the activations only (no weight gradients), ``2 x P`` per layer above the scaled
  one plus the down projection of the scaled layer;
- vocabulary head: ``2 x V x H`` for the logits and ``2 x V x H`` for their softmax-weighted sum (the gradient of
  ``log Z``): every row's softmax needs all ``V`` logits, so no exact method does less;
- preparation (once per prompt and answer token): the clean forward of the decoder, the model's logits at the
  answer positions of the first sequence of an item (``logits_to_keep``: memla4mke's greedy token and the
  projection check), the clean value of each answer token through the chunked head (``4 x V x H``) and the
  EOS-baseline forward (one copy of the prompt per replaced token).

The *floor* is the least work that yields the same scores exactly: the gradient rows only (no self-check rows),
the scaled layer's forward reduced to what follows the injected value (down projection), the head as above.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch


def _layer_params(lm) -> int:
    """Weights of the matrix products of one decoder layer (2-D parameters; embeddings are not in a layer)."""
    return sum(p.numel() for p in lm.adapter.layers[0].parameters() if p.dim() == 2)


def attribution_flops(lm, items: Sequence[tuple[str, str, str]], method: str, steps: int) -> dict[str, float]:
    """FLOPs of attributing ``items`` (one record and language) with ``method``: stages and floor, in FLOP.

    memla4mke's greedy-extended prompt of answer token ``i`` is counted as ``i`` tokens longer than the prompt.
    Returns ``prepare``, ``body``, ``head``, ``total`` (the current implementation: memla4mke adds two self-check
    rows per prompt and answer token), ``floor`` and ``rows``.
    """
    from memla_utils.text import join_prompt_answer

    L, H, N = lm.adapter.n_layers, lm.adapter.hidden_size, lm.adapter.n_neurons
    V = int(lm.model.get_output_embeddings().weight.shape[0])
    P = _layer_params(lm)
    down = H * N
    head = 4 * V * H
    body_fwd = [2 * P * (L - l) for l in range(L)]
    floor_fwd = [2 * P * (L - 1 - l) + 2 * down for l in range(L)]
    body_bwd = [2 * P * (L - 1 - l) + 2 * down for l in range(L)]
    out = {"prepare": 0.0, "body": 0.0, "head": 0.0, "floor": 0.0, "rows": 0.0}
    for prompt, answer, language in items:
        joined = join_prompt_answer(lm.tokenizer, prompt, answer, language)
        T, A = len(joined.prompt_ids), len(joined.answer_ids)
        units = range(A)
        for i in units:
            n = T + i  # tokens of the clean sequence this unit continues
            if method == "memla4mke":  # each answer token has its own clean run and EOS baseline
                out["prepare"] += n * 2 * P * L + n * n * 2 * P * L + (2 * V * H if i == 0 else 0) + 4 * V * H
            grad_rows = [(l, steps) for l in range(L)]
            check = [(0, 1), (L - 1, 1)] if method == "memla4mke" else []
            for l, k in grad_rows + check:
                out["body"] += k * (body_fwd[l] + body_bwd[l])
                out["head"] += k * head
                out["rows"] += k
            out["floor"] += steps * sum(floor_fwd[l] + body_bwd[l] + head for l in range(L))
        if method == "exact":  # one clean forward and baseline for the whole teacher-forced sequence
            n = T + A - 1
            out["prepare"] += n * 2 * P * L + A * 6 * V * H + T * n * 2 * P * L
    out["total"] = out["prepare"] + out["body"] + out["head"]
    out["floor"] += out["prepare"]
    return out


def matmul_gflops(shapes: Sequence[tuple[int, int, int]] = ((512, 640, 8192), (512, 8192, 640), (512, 640, 2048)),
                  repeats: int = 5) -> dict[str, Any]:
    """Measured float32 ``torch.mm`` rate (GFLOP/s, wall and process CPU time) on shapes like the attribution's:
    the vocabulary head's two products and a decoder layer's MLP product, at the current thread count."""
    res: dict[str, Any] = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(2):
            a @ b
        w, c = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            a @ b
        w, c = time.perf_counter() - w, time.process_time() - c
        flop = 2 * m * k * n * repeats
        res[f"{m}x{k}x{n}"] = {"wall": round(flop / w / 1e9, 2), "cpu": round(flop / c / 1e9, 2)}
    res["best_wall"] = max(v["wall"] for v in res.values())
    res["best_cpu"] = max(v["cpu"] for k, v in res.items() if isinstance(v, dict))
    return res


__all__ = ["attribution_flops", "matmul_gflops"]
