"""Per-stage GFLOP/s against the machine's measured matrix-multiply rate, and a projection of the medium preset.

Issue 15, item 6. One process loads the model, measures the float32 matrix-multiply rate at the model's own matrix
shapes (before and after the stages, same threads), then times each stage of the pipeline on the first
``--records`` MKEB records and divides its FLOP count (below) by its time: the achieved GFLOP/s and its fraction
of the measured ``torch`` matmul rate show how far each stage is from the physical limit of this machine. Finally
the medium preset's work (``memla_utils.config.PRESETS["medium"]``) is counted in units and multiplied by the
per-unit times.

Matmul rate: ``F.linear(x [M, k], W [n, k])`` (the model's layout) for the decoder MLP's two shapes
(``k, n = H, N`` and ``N, H``) and the vocabulary head (``H, V``), ``M`` in ``--mm-rows``; each timed ``--repeats``
times (inner loops of >= 50 ms), median per shape. The reference rate is the best shape's median (per clock: wall
and process CPU time; on a shared machine CPU time is the steadier of the two).

FLOPs (multiply-adds x 2, matrix products only; attention scores over <= ~40-token contexts, norms, activations,
LoRA factors and Adam are left out, < ~2 % at these lengths). ``L`` layers, ``H`` hidden, ``N`` FFN neurons,
``V`` vocabulary rows of the output head, ``P`` = weights of one decoder layer's matrix products (its 2-D
parameters), ``T`` = token positions run through the body (padding included: it is computed), ``K`` = positions
whose logits are computed (``logits_to_keep``):

- forward: ``2 P L T + 2 V H K``;
- attribution of one (record, language): :func:`benchmarks.attribution_flops.attribution_flops` (``total``);
- MEMLA edit (``memla_utils.editors.memla``): per step one forward of the new-answer batch and, when the record
  has an old answer, of the old-answer batch (``T, K`` from ``build_batch``, as the editor builds them);
  ``steps + 1`` forwards (the last one only checks the stopping rule) and ``steps`` backwards. Weights are
  frozen, so a backward computes activation gradients only, from the head down to the lowest LoRA layer
  ``l0``: ``2 P (L - 1 - l0) T + 2 V H K``;
- FT edit (``memla_utils.editors.ft``, fast forward): one forward of the layers below the tuned layer ``l``
  (``2 P l T``, replayed afterwards); per step a forward of layers ``l..L-1`` and the head
  (``2 P (L - l) T + 2 V H K``); per backward the activation gradients above ``l`` and of the head
  (``2 P (L - 1 - l) T + 2 V H K``) plus the tuned MLP's weight gradients and the gradient into its down
  projection (``2 (M_mlp + H N) T``, ``M_mlp`` = the MLP's 2-D weights); ``steps`` forwards and ``steps``
  backwards (one fewer when it stopped early);
- evaluation of one edit in every language (``memla_utils.evaluate.evaluate_record``): the forward formula
  with ``T`` and ``K`` counted by hooks on the model during the timed call (prefix scoring and cached greedy
  decoding make them data-dependent);
- ROME / MEMIT / PMET / FT-L (``--baselines``, first record, edit language ``en``): timed here; their FLOPs
  (covariance solves, per-context batches, the target-vector search) are counted by ``torch.utils.flop_counter``
  (matrix products, forward and backward) on a second, untimed edit of the same record, not by a formula. Their
  one-off statistics and context templates are computed and timed once, in a private temporary cache.
  MEND (its training is a one-off of minutes) and IKE: seconds per edit and ``prepare_s`` from
  ``benchmarks/results/baselines_cpu.json``, no FLOP count; so are the four above when left out of
  ``--baselines`` (then from ``baselines_speed_cpu.json``). JSON rows carry their file, threads and load.

Projection: attribution units = records x the languages notebooks 02 and 03 attribute
(``RunConfig.attribution_languages``; the medium preset: ``"masks"``, the edit + independence languages; the
JSON's ``attribution_all_languages`` is the alternative of every run language); edit units = records x edit
languages per method; evaluation units = one per edit unit + one unedited evaluation per record. The attribution
per-unit time is the measured seconds per FLOP times the mean FLOPs of a (record, language) over the attributed
languages (a Chinese or Thai prompt costs up to 3x an English one); every other per-unit time is the measured
mean (or the JSON's), labelled in the ``source`` column; MEMLA's LSE and LIE variants take MEMLA's time (same
forwards and backwards, fewer LoRA pairs). One-off costs: the baselines' statistics (measured) and MEND's
training (``baselines_cpu.json``).

Usage (from the repository root; ``nice`` on a shared machine):
    python -m benchmarks.bench_roofline --records 1 --threads 1
    python -m benchmarks.bench_roofline --init random --shape tiny          # seconds, no download
-> prints the tables, writes benchmarks/results/roofline_<device>[_random-<shape>].json (or --out)
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.attribution_flops import attribution_flops
from benchmarks.common import (
    RESULTS,
    add_model_args,
    bench_records,
    default_out,
    environment,
    fixed_masks,
    fixed_step_overrides,
    fixed_work,
    load_lm,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench_roofline")
#: where per-edit times come from for methods not timed here (MEND's training takes minutes; IKE's edit is free)
JSON_METHODS = {"baselines_speed_cpu.json": ("rome", "memit", "pmet", "ft-l"), "baselines_cpu.json": ("mend", "ike")}
#: methods with a one-off cost per run (MEND's training; ROME/MEMIT/PMET's second moments and context templates)
ONE_OFF = ("rome", "memit", "pmet", "mend")


# ------------------------------------------------------------------------------------------------ FLOP formulas
@dataclass(frozen=True)
class Dims:
    """The sizes the FLOP formulas need: layers, hidden, FFN neurons, vocabulary, and the weights of one decoder
    layer's matrix products (``P``, its 2-D parameters)."""

    layers: int
    hidden: int
    neurons: int
    vocab: int
    layer_params: int

    @classmethod
    def from_lm(cls, lm: Any) -> Dims:
        """From the loaded model's config (``num_hidden_layers``, ``hidden_size``, ``intermediate_size``,
        ``vocab_size``; GPT-2's names too), each checked against its weights (``ValueError`` if they differ);
        a size the config leaves unset (GPT-2's ``n_inner=None``) is taken from the weights."""
        ad = lm.adapter
        cfg = lm.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        weights = {"layers": ad.n_layers, "hidden": ad.hidden_size, "neurons": ad.n_neurons,
                   "vocab": lm.model.get_output_embeddings().weight.shape[0]}
        names = {"layers": ("num_hidden_layers", "n_layer"), "hidden": ("hidden_size", "n_embd"),
                 "neurons": ("intermediate_size", "n_inner"), "vocab": ("vocab_size",)}
        sizes: dict[str, int] = {}
        for key, attrs in names.items():
            value = next((getattr(cfg, a) for a in attrs if getattr(cfg, a, None) is not None), weights[key])
            if int(value) != int(weights[key]):
                raise ValueError(f"config {attrs[0]}={value} but the weights have {weights[key]}")
            sizes[key] = int(value)
        return cls(**sizes, layer_params=sum(p.numel() for p in ad.layers[0].parameters() if p.dim() == 2))


def forward_flops(d: Dims, tokens: int, logits: int, layers: int | None = None) -> float:
    """FLOP of a forward: ``2 P layers T + 2 V H K`` (``layers`` defaults to all)."""
    n = d.layers if layers is None else layers
    return 2.0 * d.layer_params * n * tokens + 2.0 * d.vocab * d.hidden * logits


def backward_flops(d: Dims, tokens: int, logits: int, lowest: int) -> float:
    """FLOP of an activation-gradient backward from the head down to layer ``lowest`` (frozen weights; the
    lowest layer's own matrices need no gradient): ``2 P (L - 1 - lowest) T + 2 V H K``."""
    return 2.0 * d.layer_params * (d.layers - 1 - lowest) * tokens + 2.0 * d.vocab * d.hidden * logits


def memla_edit_flops(d: Dims, batches: Sequence[tuple[int, int]], steps: int, lowest_layer: int) -> float:
    """FLOP of one MEMLA edit: ``steps + 1`` forwards and ``steps`` backwards of every ``(T, K)`` batch."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    fwd = sum(forward_flops(d, t, k) for t, k in batches)
    bwd = sum(backward_flops(d, t, k, lowest_layer) for t, k in batches)
    return (steps + 1) * fwd + steps * bwd


def ft_edit_flops(d: Dims, batch: tuple[int, int], layer: int, mlp_params: int, forwards: int,
                  backwards: int) -> float:
    """FLOP of one FT edit with fast forward (see the module docstring): the lower layers once, then
    ``forwards`` forwards from ``layer`` and ``backwards`` backwards into the tuned MLP's weights."""
    t, k = batch
    lower = 2.0 * d.layer_params * layer * t
    fwd = forward_flops(d, t, k, layers=d.layers - layer)
    bwd = backward_flops(d, t, k, layer) + 2.0 * (mlp_params + d.hidden * d.neurons) * t
    return lower + forwards * fwd + backwards * bwd


def batch_size_of(batch: Any) -> tuple[int, int]:
    """``(T, K)`` of a :class:`memla_utils.text.PromptAnswerBatch`: ids run (padding included) and logit
    positions (``rows x columns any row predicts an answer token at``, as ``answer_logits`` keeps them)."""
    rows = int(batch.input_ids.shape[0])
    return int(batch.input_ids.numel()), rows * int(batch.answer_mask.any(0).sum())


def memla_batches(lm: Any, record: Any, language: str) -> list[tuple[int, int]]:
    """``(T, K)`` of the batch one MEMLA training step runs: the new answer's row and, when the record has one, the
    old answer's, in one right-padded batch (``MemlaEditor._batches``)."""
    from memla_utils.text import build_batch

    view = record.for_language(language)
    answers = [view.target_new] + ([view.target_true] if (view.target_true or "").strip() else [])
    return [batch_size_of(build_batch(lm.tokenizer, [view.prompt] * len(answers), answers, [language] * len(answers)))]


class PositionCounter:
    """Token positions run through ``model`` and logit rows its output head computed, over every forward while
    active (hooks on the top module and on the head: ``generate`` calls the model once per decoding step, and
    evaluation projects the hidden states of several forwards in one head call, padded blocks included:
    :mod:`memla_utils.head_projection`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.tokens, self.logits, self.calls = model, 0, 0, 0

    def _pre(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"][..., 0]
        self.tokens += int(ids.numel())
        self.calls += 1

    def _post(self, module: Any, args: tuple, out: Any) -> None:
        if torch.is_tensor(out) and out.shape[-1]:
            self.logits += int(out.numel() // out.shape[-1])

    @contextmanager
    def active(self) -> Iterator[PositionCounter]:
        handles = [self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                   self.model.get_output_embeddings().register_forward_hook(self._post)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


# ------------------------------------------------------------------------------------------------ matmul rate
def matmul_rates(d: Dims, rows: Sequence[int] = (16, 256), repeats: int = 3,
                 min_seconds: float = 0.05) -> dict[str, dict[str, float]]:
    """Median float32 GFLOP/s (``wall`` and process ``cpu`` clock) of ``F.linear`` at the model's matrix shapes,
    at the current thread count: ``{"<name> MxKxN": {"m", "k", "n", "wall", "cpu"}}``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    shapes = {"up": (d.hidden, d.neurons), "down": (d.neurons, d.hidden), "head": (d.hidden, d.vocab)}
    out: dict[str, dict[str, float]] = {}
    for m in rows:
        for name, (k, n) in shapes.items():
            x, w = torch.randn(m, k), torch.randn(n, k)
            t = time.perf_counter()
            F.linear(x, w)  # warm-up, and the inner loop's length
            inner = max(1, math.ceil(min_seconds / max(time.perf_counter() - t, 1e-6)))
            wall, cpu = [], []
            for _ in range(repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(inner):
                    F.linear(x, w)
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
            flop = 2.0 * m * k * n * inner
            r = out[f"{name} {m}x{k}x{n}"] = {"m": m, "k": k, "n": n, "wall": flop / statistics.median(wall) / 1e9,
                                              "cpu": flop / max(statistics.median(cpu), 1e-9) / 1e9}
            log.info("matmul %s %dx%dx%d: %.1f GFLOP/s wall, %.1f cpu", name, m, k, n, r["wall"], r["cpu"])
    return out


def peak_rate(*measurements: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Per clock, the best shape's rate (GFLOP/s) over the given measurements, and which shape it was."""
    best: dict[str, Any] = {}
    for clock in ("wall", "cpu"):
        name, rate = max(((k, v[clock]) for m in measurements for k, v in m.items()), key=lambda kv: kv[1])
        best[clock], best[f"{clock}_shape"] = rate, name
    return best


# ------------------------------------------------------------------------------------------------ rows
def stage_row(stage: str, unit: str, flop: float | None, wall_s: float, cpu_s: float | None, rate: Mapping[str, Any],
              source: str, **extra: Any) -> dict[str, Any]:
    """One table row: GFLOP, seconds, achieved GFLOP/s and fraction of the matmul ``rate`` per clock.

    Raises ``ValueError`` for a time that is not a positive finite number or a negative / non-finite FLOP
    count (a zero time would give an infinite rate).
    """
    for name, s in (("wall_s", wall_s), ("cpu_s", cpu_s)):
        if s is not None and not (math.isfinite(s) and s > 0):
            raise ValueError(f"{stage} ({unit}): {name} must be a positive finite number of seconds, got {s}")
    if flop is not None and not (math.isfinite(flop) and flop >= 0):
        raise ValueError(f"{stage} ({unit}): FLOP count must be finite and >= 0, got {flop}")
    row: dict[str, Any] = {"stage": stage, "unit": unit, "source": source,
                           "gflop": None if flop is None else flop / 1e9, "wall_s": wall_s, "cpu_s": cpu_s}
    for clock, s in (("wall", wall_s), ("cpu", cpu_s)):
        achieved = None if flop is None or s is None else flop / 1e9 / s
        row[f"gflops_{clock}"] = achieved
        row[f"fraction_of_matmul_{clock}"] = None if achieved is None else achieved / rate[clock]
    row.update(extra)
    return row


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(fn(), wall seconds, process CPU seconds)``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


# ------------------------------------------------------------------------------------------------ projection
def preset_units(preset: str = "medium") -> dict[str, Any]:
    """The work of ``PRESETS[preset]`` in units: ``{"attribution": n, "edit <method>": n, ..., "evaluation": n}``
    plus ``_info`` (records, languages, methods, the attributed languages, and the attribution count had every
    run language been attributed)."""
    from memla_utils.config import RunConfig

    cfg = RunConfig.from_params(preset=preset)
    n, edit, langs = cfg.n_records, list(cfg.edit_languages), list(cfg.languages)
    attributed = list(dict.fromkeys([*edit, *cfg.attribution_languages()]))
    units: dict[str, Any] = {"attribution": n * len(attributed)}
    for m in cfg.methods:
        units[f"edit {m}"] = n * len(edit)
    units["evaluation"] = n * len(edit) * len(cfg.methods) + n  # every edit, + the unedited model once per record
    units["_info"] = {"preset": preset, "records": n, "languages": langs, "edit_languages": edit,
                      "methods": list(cfg.methods), "attribution_languages": attributed,
                      "attribution_all_languages": n * len(dict.fromkeys([*edit, *langs]))}
    return units


def project(units: Mapping[str, Any], per_unit: Mapping[str, Mapping[str, Any]],
            one_off: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Seconds of every stage = units x per-unit seconds (per clock present), plus one-off costs; the total.

    ``per_unit[stage]`` and ``one_off[name]`` = ``{"wall_s": s, "cpu_s": s | None, "source": str}`` (no CPU
    time: the wall time counts on both clocks). A stage without a per-unit time is listed in ``missing`` and left
    out of the total (which then is a lower bound).
    """
    rows, missing = [], []
    total = {"wall_s": 0.0, "cpu_s": 0.0}
    for stage, n in units.items():
        if stage.startswith("_"):
            continue
        t = per_unit.get(stage)
        if t is None:
            missing.append(stage)
            rows.append({"stage": stage, "units": n, "per_unit_wall_s": None, "wall_s": None, "cpu_s": None,
                         "source": "no measurement"})
            continue
        wall = n * t["wall_s"]
        cpu = n * (t["cpu_s"] if t.get("cpu_s") is not None else t["wall_s"])  # JSON times: wall only
        total["wall_s"] += wall
        total["cpu_s"] += cpu
        rows.append({"stage": stage, "units": n, "per_unit_wall_s": t["wall_s"], "per_unit_cpu_s": t.get("cpu_s"),
                     "wall_s": wall, "cpu_s": cpu, "source": t["source"]})
    for stage, t in (one_off or {}).items():
        cpu = t["cpu_s"] if t.get("cpu_s") is not None else t["wall_s"]
        total["wall_s"] += t["wall_s"]
        total["cpu_s"] += cpu
        rows.append({"stage": stage, "units": 1, "per_unit_wall_s": t["wall_s"], "per_unit_cpu_s": t.get("cpu_s"),
                     "wall_s": t["wall_s"], "cpu_s": cpu, "source": t["source"]})
    return {"rows": rows, "total_wall_s": total["wall_s"], "total_cpu_s": total["cpu_s"],
            "total_wall_h": total["wall_s"] / 3600, "total_cpu_h": total["cpu_s"] / 3600, "missing": missing}


# ------------------------------------------------------------------------------------------------ JSON stages
def json_stages(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Per-edit seconds (and GFLOP where counted) of the baselines from earlier JSON (:data:`JSON_METHODS`; used
    for those not timed here), and the one-off ``prepare_s`` of those that have one (:data:`ONE_OFF`)."""
    out: dict[str, dict[str, Any]] = {}
    prepare: dict[str, tuple[float, str]] = {}
    for name, methods in JSON_METHODS.items():
        path = results / name
        if not path.is_file():
            log.warning("%s missing: no per-edit time for %s", path, ", ".join(methods))
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        env = data.get("environment", {})
        cond = (f"threads {env.get('torch_threads', data.get('torch_threads'))}, load "
                f"{env.get('load_average_1min', '?')}")
        for m, r in data.get("methods", {}).items():
            if r.get("prepare_s") and m in ONE_OFF:
                prepare[m] = (r["prepare_s"], f"{path.name} prepare_s ({cond})")
            if m in methods:
                out[m] = {"wall_s": r.get("current_s_per_edit", r.get("seconds_per_edit")),
                          "gflop": r.get("gflop_per_edit"), "source": f"{path.name} ({cond})"}
    for m, (s, src) in prepare.items():
        if m in out:
            out[m].update(prepare_s=s, prepare_source=src)
    return out


# ------------------------------------------------------------------------------------------------ measuring
class _ReadOnlyCache:
    """The project's artifact cache, read only (the shared cache is never written by a benchmark)."""

    def __init__(self) -> None:
        from memla_utils.cache import ArtifactCache

        self._cache = ArtifactCache()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("put_"):
            return lambda *a, **k: None
        return getattr(self._cache, name)

    def __contains__(self, key: str) -> bool:
        return key in self._cache


@contextmanager
def _private_cache() -> Iterator[Path]:
    """``$MEMLA_CACHE`` pointed at an empty temporary folder: the baselines' one-off artifacts (context
    templates, corpus, second moments) are computed, and timed, without touching the shared cache."""
    import tempfile

    before = os.environ.get("MEMLA_CACHE")
    with tempfile.TemporaryDirectory(prefix="roofline-cache-") as tmp:
        os.environ["MEMLA_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if before is None:
                os.environ.pop("MEMLA_CACHE", None)
            else:
                os.environ["MEMLA_CACHE"] = before


def counted_flops(fn: Callable[[], Any]) -> int:
    """FLOP of ``fn()`` by ``torch.utils.flop_counter`` (matrix products, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure(lm: Any, records: Sequence[Any], args: argparse.Namespace, rate: Mapping[str, Any],
            units: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]],
                                               dict[str, dict[str, Any]]]:
    """Time every in-process stage on ``records``; returns the table rows, the per-unit times for the
    projection (``{stage: {"wall_s", "cpu_s", "source"}}``) and the measured one-off costs."""
    import memla_utils.attribution as attribution
    from memla_utils.baselines import baseline_overrides
    from memla_utils.cache import ArtifactCache
    from memla_utils.editors import make_editor
    from memla_utils.editors.ft import mlp_parameter_names
    from memla_utils.evaluate import evaluate_language, evaluate_record
    from memla_utils.masks import MaskConfig, compute_record_masks
    from memla_utils.runner import RunnerConfig
    from memla_utils.text import build_batch

    d = Dims.from_lm(lm)
    info = units["_info"]
    random_init = lm.info.get("init") == "random"
    eval_langs, edit_langs = info["languages"], info["edit_languages"]
    attr_langs = [s for s in args.attr_languages.split(",") if s]
    off = ArtifactCache(enabled=False)
    acfg = attribution.AttributionConfig()  # memla4mke, 20 steps, paraphrases: what the masks use
    fixed = fixed_step_overrides() if random_init else {}
    memla = make_editor("memla", **fixed.get("memla", {}))
    ft_over = {**baseline_overrides(args.budget, eval_langs).get("ft", {}),
               **({"early_stop_nll": float("-inf")} if random_init else {})}
    ft = make_editor("ft", **ft_over)
    eval_config = RunnerConfig().eval_config
    baselines = [m for m in args.baselines.split(",") if m]
    overrides = baseline_overrides(args.budget, eval_langs)
    no_stop = {m: {"early_stop_nll": float("-inf")} for m in baselines} if random_init else {}
    one_off: dict[str, dict[str, Any]] = {}

    log.info("warm-up")
    attribution.record_attributions(lm, records[0], attr_langs[0],
                                    attribution.AttributionConfig(steps=2, use_paraphrases=False), off)
    evaluate_language(lm, records[0], attr_langs[0], config=eval_config)

    rows: list[dict[str, Any]] = []
    acc: dict[str, list[tuple[float, float, float]]] = {}  # stage -> (flop, wall, cpu)

    def add(key: str, row: dict[str, Any]) -> None:
        rows.append(row)
        acc.setdefault(key, []).append((row["gflop"] * 1e9, row["wall_s"], row["cpu_s"]))
        log.info("%s %s: %.1f GFLOP in %.2f s wall / %.2f s cpu", row["stage"], row["unit"], row["gflop"],
                 row["wall_s"], row["cpu_s"])

    for rec in records:
        for lang in attr_langs:
            _, w, c = _timed(lambda: attribution.record_attributions(lm, rec, lang, acfg, off))
            flop = attribution_flops(lm, attribution.record_items(rec, lang, acfg), acfg.method, acfg.steps)["total"]
            add("attribution", stage_row(f"attribution {acfg.method}", f"{rec.example_id} {lang}", flop, w, c, rate,
                                         "measured", prompts=len(attribution.record_items(rec, lang, acfg))))
        for i, lang in enumerate(edit_langs):
            if random_init:
                masks = fixed_masks(lm, rec, lang, seed=args.seed)
            else:  # attribution of the first records is usually cached; computed (not written) otherwise
                masks = compute_record_masks(lm, rec, lang, MaskConfig(), _ReadOnlyCache())  # type: ignore[arg-type]
            edit, w, c = _timed(lambda: memla.edit(lm, rec, lang, masks=masks))
            steps, lowest = int(edit.info["steps"]), min(edit.info["layers"])
            flop = memla_edit_flops(d, memla_batches(lm, rec, lang), steps, lowest)
            add("edit memla", stage_row("edit memla", f"{rec.example_id} {lang}", flop, w, c, rate, "measured",
                                        steps=steps, lowest_layer=lowest))
            if i == 0:
                with PositionCounter(lm.model).active() as counter:
                    _, w, c = _timed(lambda: evaluate_record(lm, rec, eval_langs, config=eval_config))
                flop = forward_flops(d, counter.tokens, counter.logits)
                add("evaluation", stage_row("evaluation", f"{rec.example_id} {len(eval_langs)} languages", flop, w,
                                            c, rate, "measured", tokens=counter.tokens, logits=counter.logits,
                                            forwards=counter.calls))
            edit.revert()
        lang = edit_langs[0]
        edit, w, c = _timed(lambda: ft.edit(lm, rec, lang))
        layer, hist = int(edit.info["layer"]), list(edit.info["nll"])
        stopped = hist[-1] <= ft.config.early_stop_nll
        mlp = sum(p.numel() for n, p in lm.model.named_parameters() if n in set(mlp_parameter_names(lm, layer))
                  and p.dim() == 2)
        view = rec.for_language(lang)
        batch = batch_size_of(build_batch(lm.tokenizer, [view.prompt], [view.target_new], lang))
        flop = ft_edit_flops(d, batch, layer, mlp, forwards=len(hist), backwards=len(hist) - int(stopped))
        add("edit ft", stage_row("edit ft", f"{rec.example_id} {lang}", flop, w, c, rate,
                                 f"measured ({args.budget})", steps=len(hist), layer=layer))
        edit.revert()
        with _private_cache():
            for m in baselines:
                editor = make_editor(m, **overrides.get(m, {}), **no_stop.get(m, {}))
                if hasattr(editor, "layers_for") and m not in one_off:  # statistics and templates, once per run
                    from memla_utils.covariance import second_moments
                    from memla_utils.editors.locate import context_prefixes

                    cfg = editor.config
                    _, w, c = _timed(lambda: (context_prefixes(lm, cfg.n_context, cfg.context_tokens, cfg.seed),
                                              second_moments(lm, editor.layers_for(lm), cfg.covariance)))
                    one_off[m] = {"wall_s": w, "cpu_s": c, "source": "measured (statistics shared across methods "
                                                                     "stay in memory)"}
                edit, w, c = _timed(lambda: editor.edit(lm, rec, lang))
                edit.revert()
                flop = counted_flops(lambda: editor.edit(lm, rec, lang).revert())  # untimed second edit
                add(f"edit {m}", stage_row(f"edit {m}", f"{rec.example_id} {lang}", flop, w, c, rate,
                                           f"measured ({args.budget}); FLOPs: torch flop counter",
                                           steps=edit.info.get("steps")))

    per_unit: dict[str, dict[str, Any]] = {}
    for key, vals in acc.items():
        n = len(vals)
        per_unit[key] = {"wall_s": sum(v[1] for v in vals) / n, "cpu_s": sum(v[2] for v in vals) / n,
                         "source": f"measured, mean of {n}"}
    # attribution: seconds per FLOP as measured, times the mean FLOPs of a (record, language) over the attributed
    # languages
    flop_m, wall_m, cpu_m = (sum(v[i] for v in acc["attribution"]) for i in range(3))
    attributed = info["attribution_languages"]
    mean_flop = statistics.mean(attribution_flops(lm, attribution.record_items(r, l, acfg), acfg.method,
                                                  acfg.steps)["total"] for r in records for l in attributed)
    per_unit["attribution"] = {"wall_s": wall_m / flop_m * mean_flop, "cpu_s": cpu_m / flop_m * mean_flop,
                               "source": f"measured ({','.join(attr_langs)}) x FLOPs of the mean (record, language) "
                                         f"over {','.join(attributed)} ({mean_flop / 1e9:.0f} GFLOP)"}
    for variant in ("memla-lse", "memla-lie"):
        per_unit[f"edit {variant}"] = {**per_unit["edit memla"],
                                       "source": "memla's measured time (same forwards and backwards)"}
    every = list(dict.fromkeys([*edit_langs, *eval_langs]))
    all_flop = statistics.mean(attribution_flops(lm, attribution.record_items(r, l, acfg), acfg.method,
                                                 acfg.steps)["total"] for r in records for l in every)
    per_unit["_attribution_all_languages"] = {"wall_s": wall_m / flop_m * all_flop,
                                              "cpu_s": cpu_m / flop_m * all_flop, "languages": every}
    return rows, per_unit, {f"once: {m} setup": t for m, t in one_off.items()}


# ------------------------------------------------------------------------------------------------ main
def _fmt(v: float | None, spec: str) -> str:
    """``format(v, spec)``, or a dash as wide as the spec's width for a missing value."""
    return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0] or 0))


def print_tables(result: dict[str, Any]) -> None:
    rate = result["matmul"]["peak"]
    print(f"\nmatmul (F.linear float32, {result['threads']} thread(s)): best {rate['wall']:.1f} GFLOP/s wall "
          f"({rate['wall_shape']}), {rate['cpu']:.1f} GFLOP/s cpu ({rate['cpu_shape']})")
    for k, v in result["matmul"]["before"].items():
        a = result["matmul"]["after"].get(k, {})
        print(f"  {k:<22} before {v['wall']:7.1f} wall {v['cpu']:7.1f} cpu   after {_fmt(a.get('wall'), '7.1f')}"
              f" wall {_fmt(a.get('cpu'), '7.1f')} cpu")
    head = (f"{'stage':<24}{'unit':<24}{'GFLOP':>9}{'wall s':>9}{'cpu s':>9}{'GFLOP/s':>9}{'% mm':>7}  source")
    print("\n" + head + "\n" + "-" * len(head))
    for r in result["stages"]:
        cpu = r["cpu_s"] is not None
        clock = "cpu" if cpu else "wall"
        g, f = r[f"gflops_{clock}"], r[f"fraction_of_matmul_{clock}"]
        pct = "      - " if f is None else f"{100 * f:6.1f}%"
        print(f"{r['stage']:<24}{r['unit'][:23]:<24}{_fmt(r['gflop'], '9.1f')}{r['wall_s']:9.2f}"
              f"{_fmt(r['cpu_s'], '9.2f')}{_fmt(g, '9.1f')}{pct}  {r['source']}{'' if cpu else ' [wall clock]'}")
    print("GFLOP/s and % mm: process CPU clock where timed here, wall clock for JSON rows; % of the best matmul "
          "rate on the same clock")
    print(f"load average (1 min): {result['load_average_start']} at the start, "
          f"{result['environment']['load_average_1min']} at the end")
    p, info = result["projection"], result["units"]["_info"]
    every = p["attribution_all_languages"]
    print(f"\n{info['preset']} preset: {info['records']} records x {len(info['languages'])} languages, edit "
          f"{','.join(info['edit_languages'])}, {len(info['methods'])} methods (budget {result['budget']}); "
          f"attribution in {','.join(info['attribution_languages'])} (had every run language been attributed: "
          f"{every['units']} units, {every['wall_h']:.2f} h)")
    head = f"{'stage':<22}{'units':>7}{'s/unit':>9}{'hours':>8}{'h (cpu)':>9}  per-unit source"
    print(head + "\n" + "-" * len(head))
    for r in p["rows"]:
        print(f"{r['stage']:<22}{r['units']:>7}{_fmt(r['per_unit_wall_s'], '9.2f')}"
              f"{_fmt(None if r['wall_s'] is None else r['wall_s'] / 3600, '8.2f')}"
              f"{_fmt(None if r['cpu_s'] is None else r['cpu_s'] / 3600, '9.2f')}  {r['source']}")
    print("s/unit, hours: wall clock; h (cpu): process CPU clock for what was timed here (JSON rows: wall)")
    print(f"{'total':<22}{'':>7}{'':>9}{p['total_wall_h']:8.2f}{p['total_cpu_h']:9.2f}"
          f"{'  (lower bound: no time for ' + ', '.join(p['missing']) + ')' if p['missing'] else ''}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--records", type=int, default=1, help="MKEB records measured (the first with every language)")
    ap.add_argument("--preset", default="medium", help="the preset projected (memla_utils.config.PRESETS)")
    ap.add_argument("--attr-languages", default="en", help="languages attributed per record (timed)")
    ap.add_argument("--budget", default="cpu-small", help="baseline hyperparameters (medium on CPU: cpu-small)")
    ap.add_argument("--baselines", default="rome,memit,pmet,ft-l",
                    help="locate-then-edit / FT-L baselines timed here (one edit each, first record); the others' "
                         "times come from JSON")
    ap.add_argument("--mm-rows", default="16,256", help="rows M of the matmul-rate shapes")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per matmul shape (median)")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where the baselines' JSON are read")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    setup_logging()
    start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    lm = load_lm(args)
    units = preset_units(args.preset)
    records = bench_records(args.records, units["_info"]["languages"])
    d = Dims.from_lm(lm)
    rows_m = [int(s) for s in args.mm_rows.split(",") if s]
    before = matmul_rates(d, rows_m, args.repeats)
    rate = peak_rate(before)
    stages, per_unit, one_off = measure(lm, records, args, rate, units)
    after = matmul_rates(d, rows_m, args.repeats)
    rate = peak_rate(before, after)
    stages = [stage_row(r["stage"], r["unit"], None if r["gflop"] is None else r["gflop"] * 1e9, r["wall_s"],
                        r["cpu_s"], rate, r["source"], **{k: v for k, v in r.items() if k not in _ROW_KEYS})
              for r in stages]  # fractions against the rate of both measurements
    pretrained_default = args.init == "pretrained" and args.model == "default"
    if pretrained_default:  # the JSON were measured on the default model only
        for m, t in json_stages(Path(args.results_dir)).items():
            if f"edit {m}" in per_unit:  # measured here
                continue
            per_unit[f"edit {m}"] = {"wall_s": t["wall_s"], "cpu_s": None, "source": t["source"]}
            stages.append(stage_row(f"edit {m}", "1 edit (from JSON)", None if t["gflop"] is None else t["gflop"] * 1e9,
                                    t["wall_s"], None, rate, t["source"]))
            if m in units["_info"]["methods"] and t.get("prepare_s"):
                one_off[f"once: {m} setup"] = {"wall_s": t["prepare_s"], "source": t["prepare_source"]}
    one_off = {k: v for k, v in one_off.items() if k.split()[1] in units["_info"]["methods"]}
    projection = project(units, {k: v for k, v in per_unit.items() if not k.startswith("_")}, one_off)
    every = per_unit["_attribution_all_languages"]
    projection["attribution_all_languages"] = {
        "units": units["_info"]["attribution_all_languages"], "languages": every["languages"],
        "wall_h": units["_info"]["attribution_all_languages"] * every["wall_s"] / 3600,
        "cpu_h": units["_info"]["attribution_all_languages"] * every["cpu_s"] / 3600}
    from memla_utils.shapes import shape_summary

    result = {"benchmark": "roofline", "command": "python -m benchmarks.bench_roofline " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "threads": torch.get_num_threads(), "budget": args.budget, "records": [r.example_id for r in records],
              "dims": asdict(d), "matmul": {"before": before, "after": after, "peak": rate},
              "stages": stages, "per_unit": per_unit, "units": units, "projection": projection,
              "model": shape_summary(lm), "fixed_work": fixed_work(lm), "wall_s": time.perf_counter() - start,
              "load_average_start": load_start,
              "environment": environment(lm.device)}
    print_tables(result)
    out = write_json(args.out or default_out("roofline", lm), result)
    print(f"-> {out}")


_ROW_KEYS = {"stage", "unit", "source", "gflop", "wall_s", "cpu_s", "gflops_wall", "gflops_cpu",
             "fraction_of_matmul_wall", "fraction_of_matmul_cpu"}

if __name__ == "__main__":
    main()
