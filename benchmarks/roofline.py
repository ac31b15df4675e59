"""A roofline floor: the least time each matrix product could take on this machine, from its FLOPs *and* its bytes.

Issue 15, items 3 and 6. The FLOP floor (FLOPs / the measured ``torch.mm`` rate) assumes every product runs at the
rate of a large, square-ish one. A product of a few rows with a large weight, such as the 262k x 640 vocabulary
head or a decoder layer's MLP for the ~12 tokens of ROME's target search, cannot: it reads the whole weight from
memory to do a few FLOPs per byte, and its time is bound by the memory bandwidth. The roofline floor of one product
is ``max(FLOPs / matmul rate, bytes / bandwidth)``, with ``bytes`` = its operands and its result, each moved once
(what a product costs when its operands are not already in cache); the floor of a computation is the sum over the
products it runs (``mm``, ``addmm``, ``bmm``, forward and backward), as recorded by a ``TorchDispatchMode`` while it
runs. It is the floor of *these* products: a fused implementation that reused an operand from cache could go below
it. Everything else (softmax, norms, attention over short contexts, Adam) is left out.

:func:`memory_bandwidth` measures the machine's read bandwidth (``torch.sum`` over a tensor far larger than the
caches, at the current thread count); :func:`matmul_rate` the float32 ``torch.mm`` rate of large products.

The same recording also times each product where it runs (``Products.seconds``: the wall clock around the
product's kernel, with the operands in whatever cache state the computation left them). Their sum says how much
of an edit is spent in matrix products at the rates this machine's BLAS reaches for these shapes, and so how much
is elsewhere (small operations, Python, autograd). It is a profile, not a floor: a different kernel or layout
could make the products faster (session 36: MKL's packed weights for the decoder's linear layers did not).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_MM = {"mm", "addmm", "bmm", "baddbmm"}


def _flops(name: str, args: tuple[Any, ...], out: torch.Tensor) -> int:
    """Multiply-adds x 2 of one product: ``2 x (elements of the result) x (the contracted dimension)``."""
    a = args[1] if name in ("addmm", "baddbmm") else args[0]
    return 2 * out.numel() * int(a.shape[-1])


def _bytes(args: tuple[Any, ...], out: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in args if isinstance(t, torch.Tensor)) + \
        out.numel() * out.element_size()


@dataclass
class Products:
    """The products one computation ran: FLOPs and bytes each (in call order)."""

    flops: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def floor_s(self, gflops: float, gbytes_s: float) -> float:
        """Seconds: ``sum over products of max(FLOPs / rate, bytes / bandwidth)`` (GFLOP/s, GB/s)."""
        return sum(max(f / (gflops * 1e9), b / (gbytes_s * 1e9)) for f, b in zip(self.flops, self.bytes))

    def flop_floor_s(self, gflops: float) -> float:
        return sum(self.flops) / (gflops * 1e9)

    def summary(self, gflops: float, gbytes_s: float) -> dict[str, float]:
        out = {"products": len(self.flops), "gflop": sum(self.flops) / 1e9, "gbytes": sum(self.bytes) / 1e9,
               "flop_floor_s": self.flop_floor_s(gflops), "roofline_floor_s": self.floor_s(gflops, gbytes_s)}
        if self.seconds and len(self.seconds) == len(self.flops):  # every product timed (all ran on CPU)
            out["in_products_s"] = sum(self.seconds)
        return out


class _Record(TorchDispatchMode):
    def __init__(self, products: Products) -> None:
        super().__init__()
        self.products = products

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.overloadpacket.__name__
        if name not in _MM:
            return func(*args, **(kwargs or {}))
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        seconds = time.perf_counter() - start  # CPU: the kernel has finished when the call returns
        if isinstance(out, torch.Tensor):
            self.products.flops.append(_flops(name, args, out))
            self.products.bytes.append(_bytes(args, out))
            if out.device.type == "cpu":  # elsewhere the call returns before the kernel has run
                self.products.seconds.append(seconds)
        return out


def record_products(fn: Callable[[], Any]) -> Products:
    """Run ``fn`` once and return the FLOPs, bytes and seconds of every matrix product it ran (autograd's included;
    the seconds are wall-clock and kept for CPU products only, where a product has finished when its call returns;
    ``summary`` reports their sum only when every product was timed)."""
    products = Products()
    with _Record(products):
        fn()
    return products


def memory_bandwidth(megabytes: int = 1024, repeats: int = 3) -> float:
    """Read bandwidth in GB/s: the best of ``repeats`` ``torch.sum`` passes over ``megabytes`` of float32."""
    x = torch.ones(megabytes * (1 << 20) // 4)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def matmul_rate() -> float:
    """float32 ``torch.mm`` GFLOP/s by the wall clock at the current thread count: the best of the attribution
    benchmark's shapes (:func:`benchmarks.attribution_flops.matmul_gflops`)."""
    from benchmarks.attribution_flops import matmul_gflops

    return float(matmul_gflops()["best_wall"])


__all__ = ["Products", "matmul_rate", "memory_bandwidth", "record_products"]
