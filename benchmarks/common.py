"""What every benchmark shares: model options (``--init random --shape NAME``), timing, budgets, fixed work, JSON.

Random weights and fixed work. Speed depends on shapes and on how much work is done, not on weight values; but
editors stop early when the loss is low, and how soon depends on the weights. So with ``--init random`` every
editor runs a fixed number of steps (:func:`fixed_step_overrides`: early stopping disabled, the methods'
default maximum step counts), MEMLA's masks have a fixed number of neurons per layer (:func:`fixed_masks`) and
ROME/MEMIT's second-moment statistics come from random token ids of a fixed length
(:func:`random_token_corpus`). The JSON of every benchmark says so (``fixed_work``).

Imports stay light (torch, transformers, peft and the package's own modules; no pandas, scipy or matplotlib),
so ``python3 -m benchmarks.gpu_suite`` runs on a machine with only those installed.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MKEB_PATH = PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl"
log = logging.getLogger("benchmarks")

#: MEMLA masks in random mode: neurons per layer. The default model's records have ~1-15 knowledge neurons per
#: layer and language, about 3 on average (figures/masks_neurons_per_layer.png); the independent set is smaller.
SPECIFIC_PER_LAYER = 3
INDEPENDENT_PER_LAYER = 1


# ------------------------------------------------------------------------------------------------ options, model
def add_model_args(ap: argparse.ArgumentParser, *, default_dtype: str = "float32") -> None:
    """``--init pretrained|random``, ``--shape``, ``--model``, ``--device``, ``--dtype``, ``--seed``, ``--threads``."""
    from memla_utils.shapes import SHAPES

    ap.add_argument("--init", choices=("pretrained", "random"), default="pretrained",
                    help="pretrained: load --model; random: build --shape from its config with seeded random "
                         "weights (nothing loaded; editors run a fixed number of steps)")
    ap.add_argument("--shape", default="gemma3-270m", choices=sorted(SHAPES),
                    help="model shape for --init random (memla_utils/shapes.py)")
    ap.add_argument("--model", default="default", help="--init pretrained: 'default', an HF id / path, or tiny-<arch>")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default=default_dtype, help="float32 | bfloat16 | float16 | auto")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the benchmark's draws")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def load_lm(args: argparse.Namespace):
    """The model the options ask for: a random model of ``--shape``, the pretrained ``--model``, or tiny-<arch>."""
    from memla_utils.models import load_model
    from memla_utils.shapes import build_random_model
    from memla_utils.testing import tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.init == "random":
        return build_random_model(args.shape, device=args.device, dtype=args.dtype, seed=args.seed)
    if args.model.startswith("tiny-"):
        return tiny_model(args.model.removeprefix("tiny-"))
    return load_model(args.model, device=args.device, dtype=args.dtype)


def bench_records(n: int, languages: Sequence[str], path: str | Path = MKEB_PATH):
    """The first ``n`` MKEB records restricted to ``languages`` (the repository's ``data/mkeb/mkeb.jsonl``)."""
    from memla_utils.mkeb.io import load_records

    records = load_records(path, languages=list(languages), n=n, language_check=False)
    if len(records) < n:
        raise ValueError(f"{path}: {len(records)} records with languages {list(languages)}, the benchmark needs {n}")
    return records


# ------------------------------------------------------------------------------------------------ timing, budget
def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, float]:
    """``(fn(), seconds)`` with the device synchronised before and after."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


@dataclass
class Budget:
    """Wall-clock allowance of one benchmark (``seconds=None``: unlimited). Items start only while they fit."""

    seconds: float | None = None
    start: float = field(default_factory=time.perf_counter)
    stopped: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def allows(self, estimate_s: float, what: str = "") -> bool:
        """Whether an item expected to take ``estimate_s`` fits; records what was left out when it does not."""
        ok = estimate_s <= self.remaining()
        if not ok:
            self.stopped.append(f"{what or 'item'} (needs ~{estimate_s:.1f} s, {max(0.0, self.remaining()):.1f} s left)")
            log.info("budget: skipping %s (needs ~%.1f s, %.1f s left)", what or "item", estimate_s,
                     max(0.0, self.remaining()))
        return ok

    def summary(self) -> dict[str, Any]:
        return {"cap_s": self.seconds, "used_s": round(self.elapsed(), 2), "left_out": list(self.stopped)}


def repeat_within(budget: Budget, n: int, fn: Callable[[int], float], what: str) -> list[float]:
    """Run ``fn(i)`` (returns its seconds) up to ``n`` times; the first always, the next only while the slowest
    so far still fits the budget."""
    times: list[float] = []
    for i in range(n):
        if times and not budget.allows(max(times), f"{what} #{i + 1} of {n}"):
            break
        times.append(fn(i))
    return times


# ------------------------------------------------------------------------------------------------ fixed work
def fixed_step_overrides(covariance: Any | None = None, steps: int | None = None) -> dict[str, dict[str, Any]]:
    """``make_editor`` overrides that make the work independent of the weights: no early stopping.

    Step counts are each method's default maximum (MEMLA 60, FT/FT-L 25, LoRA 30, ROME 20 and MEMIT 25 target
    steps), the worst case of a real edit, which usually stops earlier; ``steps`` replaces all of them (the
    CPU smoke test uses a few). ``covariance``: the statistics' config for ROME/MEMIT/PMET (see
    :func:`random_token_corpus`).
    """
    never = float("-inf")
    n = {} if steps is None else {"max_steps": steps}
    memla = {"stop_loss": never, "stop_prob": 2.0, **n}  # P(new) never exceeds 2: every fact trains max_steps
    out: dict[str, dict[str, Any]] = {m: dict(memla) for m in ("memla", "memla-lse", "memla-lie", "memla-unmasked",
                                                                "memla-random")}
    n = {} if steps is None else {"steps": steps}
    out.update({m: {"early_stop_nll": never, **n} for m in ("ft", "ft-l", "lora")})
    n = {} if steps is None else {"v_steps": steps}
    for m in ("rome", "memit", "pmet"):
        out[m] = {"early_stop_nll": never, **n, **({"covariance": covariance} if covariance is not None else {})}
    return out


FIXED_WORK_NOTE = ("random weights: every editor runs {steps} (early stopping "
                   "disabled), MEMLA masks have {spec} language-specific + {ind} language-independent neurons in "
                   "every layer, ROME/MEMIT second moments come from random token ids of {length} tokens")


def fixed_work(lm, *, cov_length: int | None = None, steps: int | None = None) -> dict[str, Any] | None:
    """The ``fixed_work`` entry of a benchmark JSON (``None`` for pretrained weights)."""
    if lm.info.get("init") != "random":
        return None
    return {"init": "random", "seed": lm.info.get("seed"), "shape": lm.info.get("shape"),
            "steps": steps or "each method's default maximum",
            "note": FIXED_WORK_NOTE.format(steps=f"{steps} steps" if steps else "its default maximum number of steps",
                                           spec=SPECIFIC_PER_LAYER, ind=INDEPENDENT_PER_LAYER,
                                           length=cov_length or "n/a"),
            "tokenizer": f"byte-level BPE trained in code on MKEB text, {lm.info.get('tokenizer_vocab')} entries"}


def fixed_masks(lm, record, language: str, *, specific: int = SPECIFIC_PER_LAYER,
                independent: int = INDEPENDENT_PER_LAYER, seed: int = 0):
    """MEMLA masks with exactly ``specific`` + ``independent`` (disjoint) random neurons in every layer.

    Seeded by (seed, record, language), so the same record gets the same masks; the work of an edit (ranks,
    layers) is then the same whatever the weights.
    """
    from memla_utils.cache import content_hash
    from memla_utils.masks import NeuronMasks, RecordMasks

    n_layers, n = lm.adapter.n_layers, lm.adapter.n_neurons
    gen = torch.Generator().manual_seed(seed + int(content_hash([record.example_id, language], 8), 16))
    spec, ind = {}, {}
    for layer in range(n_layers):
        perm = torch.randperm(n, generator=gen)[: specific + independent].tolist()
        spec[layer], ind[layer] = perm[:specific], perm[specific:]
    return RecordMasks(record.example_id, language, NeuronMasks.from_sets(spec, n),
                       NeuronMasks.from_sets(ind, n))


def random_token_corpus(tokenizer, path: str | Path, *, n_texts: int, length: int, seed: int = 0) -> Path:
    """A corpus file (one text per line) of ``n_texts`` texts decoded from random token ids, each at least
    ``length`` tokens long when encoded again.

    ROME/MEMIT read their statistics' texts from a file (``CorpusConfig(source=path)``) and cut each to
    ``max_length`` tokens, so with ``max_length = length`` every text contributes exactly ``length`` positions:
    the same forward passes as real text of that length, without sampling from the model.
    """
    from memla_utils.text import encode_prompt

    gen = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    table = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    lines = []
    for _ in range(n_texts):
        text = ""
        while len(encode_prompt(tokenizer, text)) < length + 1:  # + BOS
            draw = table[torch.randint(len(table), (length,), generator=gen)].tolist()
            text = (text + " " + " ".join(tokenizer.decode(draw, skip_special_tokens=True).split())).strip()
        lines.append(text)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ statistics
def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    v = v.detach().reshape(-1).to(torch.float64).cpu()
    order = v.argsort()
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(1, len(v) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique(v, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks)
    return (sums / counts)[inverse]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation (average ranks for ties, as ``scipy.stats.spearmanr``); NaN if a side is constant."""
    if x.numel() != y.numel():
        raise ValueError(f"spearman: {x.numel()} vs {y.numel()} values")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / den if den > 0 else float("nan")


# ------------------------------------------------------------------------------------------------ environment, JSON
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Device name, torch / CUDA / transformers / peft versions, CPU, threads and load (timings are read with it)."""
    dev = torch.device(device) if device is not None else None
    on_cuda = dev is not None and dev.type == "cuda" and torch.cuda.is_available()
    env: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if on_cuda else f"cpu: {cpu_name()}",
        "device_type": dev.type if dev is not None else None,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if on_cuda else None,
        "transformers": _version("transformers"), "peft": _version("peft"),
        "python": platform.python_version(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if on_cuda:
        props = torch.cuda.get_device_properties(dev)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_count"] = torch.cuda.device_count()
    return env


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (a reader never sees half a file); NaN/inf become null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_finite(payload), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    log.info("wrote %s", path)
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def default_out(benchmark: str, lm, suffix: str = "") -> Path:
    """``benchmarks/results/<benchmark>_<device>[_<shape>]<suffix>.json``."""
    shape = f"_random-{lm.info['shape']}" if lm.info.get("init") == "random" else ""
    return RESULTS / f"{benchmark}_{lm.device.type}{shape}{suffix}.json"


def free_memory() -> None:
    """Release cached GPU memory between benchmarks."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def add_worker_args(ap: argparse.ArgumentParser) -> None:
    """``--out`` (the JSON's path), and the hidden ``--worker`` / ``--worker-out`` of a benchmark whose sides run
    as subprocesses of itself (:mod:`benchmarks.reference`)."""
    ap.add_argument("--out", default=None, help="where the JSON goes (default: benchmarks/results/<name>_<device>.json)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)


def run_as_worker(args: argparse.Namespace, worker: Callable[[argparse.Namespace], dict[str, Any]]) -> bool:
    """In ``--worker`` mode: write ``worker(args)`` as JSON to ``--worker-out`` and return True."""
    if not args.worker:
        return False
    Path(args.worker_out).write_text(json.dumps(worker(args)))
    return True


def result_path(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else ``benchmarks/results/<name>_cpu.json`` (``_gpu`` for a CUDA ``--device``)."""
    device = str(getattr(args, "device", "cpu"))
    return Path(args.out) if args.out else RESULTS / f"{name}_{'cpu' if device == 'cpu' else 'gpu'}.json"


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
