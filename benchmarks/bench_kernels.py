"""The editors' few-row products under other kernels: what a faster product would change, measured side by side.

Issue 15, item 3 (session 37). ROME / MEMIT / PMET's target search projects ~12 rows through the 262,144 x 640
output head at every step, and computes ``log p(target)`` and its gradient (:func:`memla_utils.head_logprob.
logprob_and_grad`, ``shift="target"``: one read of the head in 1,024-row chunks, two ``torch.mm`` per chunk). This
script times that pass against alternatives on the same random head (values ~N(0, 0.03²), seeded), each checked
against a float64 computation of the same values:

- ``now``: the project's pass (:func:`~memla_utils.head_logprob.logprob_and_grad`, ``shift="target"``);
- ``logits``: ``log_softmax(h @ W.T)`` and its autograd gradient (two reads of the head: FT, FT-L's path);
- ``bmm-grouped``: the same target-shift sums with ``--group`` chunks of ``--group-chunk`` rows per ``torch.bmm``
  call (fewer, larger calls that split a group's chunks over the threads);
- ``mkl-packed``: the logits' product with MKL's packed copy of the head (``torch.ops.mkl._mkl_linear``, a copy of
  ~1.8x the head's bytes, packed once, outside the timing), then the gradient's product unpacked;
- ``numba-fused`` (only where ``numba`` is installed; not a dependency of this project): one hand-written kernel
  that reads each vocabulary row once and does both products from cache, 4 rows per tile, ``prange`` over the
  threads. It shows what a custom kernel would gain; the project itself carries none.

A second table times the whole-head product ``h @ W.T`` for 1-20 rows, and with the rows padded to 16
(:data:`memla_utils.head_projection.MIN_BLOCK_ROWS`): MKL's time for 7-15 rows was up to 2.5x that of 16.

A third times the decoder's products at the target search's row counts: the seven linear layers of one decoder
layer of the default model (q, k, v, o, gate, up, down: ``--hidden`` x ``--ffn``, ``--q-dim``, ``--kv-dim``), over
``--layers`` layers with their own random weights (what one forward through the layers above an edited one reads),
with ``F.linear`` (what the model runs), oneDNN's ``mkldnn_linear``, and the weights packed once for oneDNN
(``torch.ops.mkldnn._linear_pointwise``) and for MKL (``torch.ops.mkl._mkl_linear``); each variant's largest
difference from ``F.linear`` is reported.

Usage (from the repository root):
    python -m benchmarks.bench_kernels                     # the default head's shape, 2 / 4 / 12 rows
    python -m benchmarks.bench_kernels --vocab 8192 --hidden 64 --ffn 128 --q-dim 64 --kv-dim 32 --layers 2 --rows 2,5 --decoder-rows 3 --repeats 1   # seconds
-> prints the three tables, writes benchmarks/results/kernels_cpu.json (or --out)
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import RESULTS, environment, setup_logging, write_json
from memla_utils.head_logprob import SMALL_ROWS_CHUNK, logprob_and_grad

log = logging.getLogger("bench_kernels")
Pass = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ------------------------------------------------------------------------------------------------ the variants
def reference64(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(target) [R], ∂/∂h [R, H])`` in float64 (the yardstick; ``W`` converted once per call)."""
    w = weight.double()
    logp = torch.log_softmax(h.double() @ w.T, -1)
    p = logp.exp()
    return logp.gather(1, targets[:, None])[:, 0], w[targets] - p @ w


def now_pass(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The editors' pass: :func:`logprob_and_grad` with ``shift="target"`` and float64 sums."""
    return logprob_and_grad(h, targets, weight, None, None, SMALL_ROWS_CHUNK, acc_dtype=torch.float64,
                            shift="target")


def logits_pass(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax(h @ W.T)`` at the targets and its autograd gradient w.r.t. ``h``."""
    x = h.detach().requires_grad_(True)
    logp = torch.log_softmax(x @ weight.T, -1).gather(1, targets[:, None])[:, 0]
    (grad,) = torch.autograd.grad(logp.sum(), x)
    return logp.detach(), grad


def _from_sums(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor, s: torch.Tensor,
               u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and its gradient from ``s = Σ_v exp(z_v - shift)`` and ``u = Σ_v exp(z_v - shift) w_v`` (float64)."""
    wt = weight[targets].double()
    logp = (h.double() * wt).sum(-1) - shift.double() - torch.log(s)
    return logp.float(), (wt - u / s[:, None]).float()


def grouped_pass(group: int, chunk: int) -> Pass:
    """The target-shift sums with ``group`` chunks of ``chunk`` vocabulary rows per ``torch.bmm`` call."""

    def run(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        R, H = h.shape
        V = weight.shape[0]
        shift = (h * weight[targets]).sum(-1)
        span = group * chunk
        s = torch.zeros(R, dtype=torch.float64)
        u = torch.zeros(R, H, dtype=torch.float64)
        for c0 in range(0, V, span):
            n = min(span, V - c0)
            g, c = (group, chunk) if n == span else (1, n)
            w = weight[c0:c0 + n].view(g, c, H)
            e = torch.bmm(h.expand(g, R, H), w.transpose(1, 2)).sub_(shift[:, None]).exp_()
            s += e.sum((0, 2), dtype=torch.float64)
            u += torch.bmm(e, w).sum(0, dtype=torch.float64)
        return _from_sums(h, targets, weight, shift, s, u)

    return run


def mkl_packed_pass(weight: torch.Tensor, rows: int) -> Pass | None:
    """Logits through MKL's packed head (packed here, once), gradient product unpacked; None without the op."""
    ops = getattr(torch.ops, "mkl", None)
    try:
        packed = ops._mkl_reorder_linear_weight(weight, rows)
    except (AttributeError, RuntimeError):
        return None

    def run(h: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = ops._mkl_linear(h, packed, w, None, h.shape[0])
        shift = z.gather(1, targets[:, None])[:, 0]
        e = z.sub_(shift[:, None]).exp_()
        return _from_sums(h, targets, w, shift, e.sum(-1, dtype=torch.float64), (e @ w).double())

    return run


def numba_pass() -> Pass | None:
    """A fused kernel written with numba (one read of the head, both products per 4-row tile); None without numba."""
    try:
        import numba
        import numpy as np
    except ImportError:
        return None

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def sums(h, w, shift, blocks, sub):  # pragma: no cover - compiled
        R, H = h.shape
        V = w.shape[0]
        ps = np.zeros((blocks, R))
        pu = np.zeros((blocks, R, H))
        step = ((V + blocks - 1) // blocks + 3) // 4 * 4
        for b in numba.prange(blocks):
            lo, hi = b * step, min(V, b * step + step)
            acc = np.zeros((R, H), np.float32)
            se = np.zeros(R, np.float32)
            for s0 in range(lo, hi, sub):
                s1 = min(hi, s0 + sub)
                v = s0
                while v + 4 <= s1:  # 4 vocabulary rows per tile: each load of h and of acc serves 4 rows
                    w0, w1, w2, w3 = w[v], w[v + 1], w[v + 2], w[v + 3]
                    for r in range(R):
                        hr = h[r]
                        t0 = t1 = t2 = t3 = np.float32(0.0)
                        for k in range(H):
                            x = hr[k]
                            t0 += x * w0[k]
                            t1 += x * w1[k]
                            t2 += x * w2[k]
                            t3 += x * w3[k]
                        e0, e1 = math.exp(t0 - shift[r]), math.exp(t1 - shift[r])
                        e2, e3 = math.exp(t2 - shift[r]), math.exp(t3 - shift[r])
                        se[r] += (e0 + e1) + (e2 + e3)
                        ar = acc[r]
                        for k in range(H):
                            ar[k] += e0 * w0[k] + e1 * w1[k] + e2 * w2[k] + e3 * w3[k]
                    v += 4
                for vv in range(v, s1):  # the last 0-3 rows of a sub-block
                    for r in range(R):
                        a = np.float32(0.0)
                        for k in range(H):
                            a += h[r, k] * w[vv, k]
                        e = math.exp(a - shift[r])
                        se[r] += e
                        for k in range(H):
                            acc[r, k] += e * w[vv, k]
                for r in range(R):  # float32 within a sub-block of rows, float64 across them
                    ps[b, r] += se[r]
                    se[r] = 0.0
                    for k in range(H):
                        pu[b, r, k] += acc[r, k]
                        acc[r, k] = 0.0
        return ps.sum(0), pu.sum(0)

    def run(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift = (h * weight[targets]).sum(-1)
        s, u = sums(h.numpy(), weight.numpy(), shift.numpy(), 2 * torch.get_num_threads(), SMALL_ROWS_CHUNK)
        return _from_sums(h, targets, weight, shift, torch.from_numpy(s), torch.from_numpy(u))

    return run


def numba_version() -> str | None:
    """The installed numba's version (the ``numba-fused`` rows' compiler), or None."""
    try:
        import numba
    except ImportError:
        return None
    return str(numba.__version__)


# ------------------------------------------------------------------------------------------------ timing
def best_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Milliseconds of the fastest of ``repeats`` calls, after one untimed call (compilation, first touch)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def errors(got: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """max |Δ log p| and max |Δ grad| / max |grad| against the float64 values."""
    return {"logp_abs": float((got[0].double() - ref[0]).abs().max()),
            "grad_rel": float((got[1].double() - ref[1]).abs().max() / ref[1].abs().max())}


def head_pass_rows(weight: torch.Tensor, rows: Sequence[int], repeats: int, seed: int, group: int,
                   group_chunk: int) -> list[dict[str, Any]]:
    """One row per (variant, number of rows): milliseconds per pass and the errors against float64."""
    out = []
    gen = torch.Generator().manual_seed(seed + 1)
    numba_run = numba_pass()
    for r in rows:
        h = torch.randn(r, weight.shape[1], generator=gen)
        targets = torch.randint(0, weight.shape[0], (r,), generator=gen)
        ref = reference64(h, targets, weight)
        variants: dict[str, Pass | None] = {"now": now_pass, "logits": logits_pass,
                                            "bmm-grouped": grouped_pass(group, group_chunk),
                                            "mkl-packed": mkl_packed_pass(weight, r), "numba-fused": numba_run}
        for name, run in variants.items():
            if run is None:
                out.append({"variant": name, "rows": r, "ms": None, "skipped": "not available here"})
                continue
            ms = best_ms(lambda run=run: run(h, targets, weight), repeats)
            out.append({"variant": name, "rows": r, "ms": ms, **errors(run(h, targets, weight), ref)})
            log.info("%s, %d rows: %.1f ms", name, r, ms)
    return out


def padding_rows(weight: torch.Tensor, max_rows: int, pad_to: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    """``h @ W.T`` for 1..``max_rows`` rows, as they are and padded with zero rows to ``pad_to``."""
    gen = torch.Generator().manual_seed(seed + 2)
    out = []
    for r in range(1, max_rows + 1):
        h = torch.randn(r, weight.shape[1], generator=gen)
        padded = torch.cat([h, h.new_zeros(max(0, pad_to - r), h.shape[1])])
        out.append({"rows": r, "ms": best_ms(lambda h=h: h @ weight.T, repeats),
                    "padded_ms": best_ms(lambda p=padded: p @ weight.T, repeats),
                    "same_bits": bool(torch.equal(h @ weight.T, (padded @ weight.T)[:r]))})
    return out


def decoder_weights(hidden: int, ffn: int, q_dim: int, kv_dim: int, layers: int, seed: int) -> list[torch.Tensor]:
    """``layers`` x the seven ``[out, in]`` weights of a decoder layer (q, k, v, o, gate, up, down), N(0, 0.03²)."""
    gen = torch.Generator().manual_seed(seed + 3)
    shapes = [(q_dim, hidden), (kv_dim, hidden), (kv_dim, hidden), (hidden, q_dim), (ffn, hidden), (ffn, hidden),
              (hidden, ffn)]
    return [torch.randn(*shape, generator=gen) * 0.03 for _ in range(layers) for shape in shapes]


def decoder_rows(weights: Sequence[torch.Tensor], rows: Sequence[int], repeats: int, seed: int) -> list[dict[str, Any]]:
    """Milliseconds for every weight's product with ``r`` rows, per variant, and its largest difference from
    ``F.linear`` (None where the op is missing from this torch build)."""
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(seed + 4)
    out = []
    for r in rows:
        xs = {w.shape[1]: torch.randn(r, w.shape[1], generator=gen) for w in weights}
        variants: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None] = {"F.linear": F.linear}
        try:
            dense = {id(w): w.to_mkldnn() for w in weights}
            variants["mkldnn_linear"] = lambda x, w: torch._C._nn.mkldnn_linear(x.to_mkldnn(), dense[id(w)]).to_dense()
        except (AttributeError, RuntimeError):
            variants["mkldnn_linear"] = None
        try:
            dnn = {id(w): torch.ops.mkldnn._reorder_linear_weight(w, r) for w in weights}
            variants["onednn-packed"] = lambda x, w: torch.ops.mkldnn._linear_pointwise(x, dnn[id(w)], None, "none",
                                                                                          [], "")
        except (AttributeError, RuntimeError):
            variants["onednn-packed"] = None
        try:
            mkl = {id(w): torch.ops.mkl._mkl_reorder_linear_weight(w, r) for w in weights}
            variants["mkl-packed"] = lambda x, w: torch.ops.mkl._mkl_linear(x, mkl[id(w)], w, None, r)
        except (AttributeError, RuntimeError):
            variants["mkl-packed"] = None
        for name, fn in variants.items():
            if fn is None:
                out.append({"variant": name, "rows": r, "ms": None, "skipped": "not in this torch build"})
                continue
            ms = best_ms(lambda fn=fn: [fn(xs[w.shape[1]], w) for w in weights], repeats)
            diff = max(float((fn(xs[w.shape[1]], w) - F.linear(xs[w.shape[1]], w)).abs().max()) for w in weights)
            out.append({"variant": name, "rows": r, "ms": ms, "max_abs_diff": diff})
            log.info("decoder %s, %d rows: %.1f ms", name, r, ms)
    return out


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def row_list(ap: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    """``"2,4,12"`` as ``[2, 4, 12]``; an argparse error naming ``option`` unless every entry is an integer >= 1."""
    try:
        rows = [int(r) for r in text.split(",")]
    except ValueError:
        ap.error(f"{option} must be comma-separated integers, got {text!r}")
    if any(r < 1 for r in rows):
        ap.error(f"{option} must be >= 1, got {text!r}")
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=262144, help="head rows (default: Gemma 3 270M's vocabulary)")
    ap.add_argument("--hidden", type=int, default=640, help="head columns (default: Gemma 3 270M's hidden size)")
    ap.add_argument("--rows", default="2,4,12", help="hidden-state rows per pass (ROME's target search: ~12)")
    ap.add_argument("--pad-rows", type=int, default=20, help="the padding table: 1..this many rows")
    ap.add_argument("--pad-to", type=int, default=16, help="the padding table: rows padded to this many")
    ap.add_argument("--group", type=int, default=4, help="bmm-grouped: chunks per torch.bmm call")
    ap.add_argument("--group-chunk", type=int, default=256, help="bmm-grouped: vocabulary rows per chunk")
    ap.add_argument("--layers", type=int, default=11,
                    help="decoder table: layers (default: the 11 above MEMIT's window on the default model)")
    ap.add_argument("--ffn", type=int, default=2048, help="decoder table: MLP neurons (default model: 2048)")
    ap.add_argument("--q-dim", type=int, default=1024, help="decoder table: query width (default model: 4 x 256)")
    ap.add_argument("--kv-dim", type=int, default=256, help="decoder table: key / value width (default model: 256)")
    ap.add_argument("--decoder-rows", default="8,12,20,32",
                    help="decoder table: token rows (the default model's target search: ~20)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "kernels_cpu.json"))
    args = ap.parse_args(argv)
    for name in ("vocab", "hidden", "pad_rows", "pad_to", "group", "group_chunk", "repeats", "layers", "ffn", "q_dim",
                 "kv_dim"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    rows, dec_rows = row_list(ap, "--rows", args.rows), row_list(ap, "--decoder-rows", args.decoder_rows)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    weight = torch.randn(args.vocab, args.hidden, generator=torch.Generator().manual_seed(args.seed)) * 0.03
    passes = head_pass_rows(weight, rows, args.repeats, args.seed, args.group, args.group_chunk)
    padding = padding_rows(weight, args.pad_rows, args.pad_to, args.repeats, args.seed)
    del weight
    decoder = decoder_rows(decoder_weights(args.hidden, args.ffn, args.q_dim, args.kv_dim, args.layers, args.seed),
                           dec_rows, args.repeats, args.seed)
    result = {"benchmark": "kernels", "vocab": args.vocab, "hidden": args.hidden, "rows": rows,
              "layers": args.layers, "ffn": args.ffn, "q_dim": args.q_dim, "kv_dim": args.kv_dim, "decoder_rows": dec_rows,
              "group": args.group, "group_chunk": args.group_chunk, "repeats": args.repeats,
              "passes": passes, "padding": padding, "decoder": decoder, "numba": numba_version(), "environment": environment("cpu")}
    path = write_json(args.out, result)
    print(f"\nhead pass, values and gradient ({args.vocab} x {args.hidden}, {torch.get_num_threads()} threads)")
    print(f"{'variant':<12} {'rows':>4} {'ms':>8} {'max|dlogp|':>11} {'grad rel':>9}")
    for p in passes:
        print(f"{p['variant']:<12} {p['rows']:>4} {fmt(p['ms']):>8} "
              f"{p.get('logp_abs', float('nan')):>11.1e} {p.get('grad_rel', float('nan')):>9.1e}"
              + (f"  ({p['skipped']})" if "skipped" in p else ""))
    print(f"\nh @ W.T, rows as they are and padded to {args.pad_to}")
    print(f"{'rows':>4} {'ms':>8} {'padded ms':>10} {'same bits':>10}")
    for p in padding:
        print(f"{p['rows']:>4} {p['ms']:>8.1f} {p['padded_ms']:>10.1f} {str(p['same_bits']):>10}")
    print(f"\n{args.layers} decoder layers' seven linear products ({args.hidden} hidden, {args.ffn} neurons)")
    print(f"{'variant':<14} {'rows':>4} {'ms':>8} {'max|diff|':>10}")
    for p in decoder:
        print(f"{p['variant']:<14} {p['rows']:>4} {fmt(p['ms']):>8} "
              + (f"({p['skipped']})" if "skipped" in p else f"{p['max_abs_diff']:>10.1e}"))
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
