"""Tables that describe a set of records: counts per relation × language, field coverage, examples.

Used by notebook 01, the card written next to the built benchmark, and the importers' coverage report.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..languages import ordered
from .record import Record

if TYPE_CHECKING:  # pandas loads on first use: records, I/O, the builder and the editors import without it
    import pandas as pd


def counts_by_relation(records: Sequence[Record]) -> pd.DataFrame:
    """Records per relation (rows) and language (columns); a record counts in each language it has."""
    import pandas as pd

    rows = [{"relation": r.meta.get("relation", r.relation_description or "?"), "language": lang}
            for r in records for lang in r.edit]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    df = pd.crosstab(frame["relation"], frame["language"])
    return df.loc[list(dict.fromkeys(frame["relation"])), ordered(df.columns)]  # relations in record order


def coverage(records: Sequence[Record]) -> pd.DataFrame:
    """Per language: how many records have each field. A zero means "not available" for the metric using it
    (target_true → the true-answer metrics, neighborhood → NS, multi-hop → QS)."""
    import pandas as pd

    langs = ordered({l for r in records for l in r.edit})
    table = {}
    for lang in langs:
        have = [r for r in records if lang in r.edit]
        table[lang] = {
            "records": len(have),
            "target_true": sum(r.edit[lang].target_true is not None for r in have),
            "paraphrase": sum(bool(r.paraphrase_prompts.get(lang)) for r in have),
            "neighborhood": sum(bool(r.neighborhood_prompts.get(lang)) for r in have),
            "multi_hop": sum(bool(r.multi_hop_questions.get(lang)) for r in have),
        }
    return pd.DataFrame(table).T.rename_axis("language")


def coverage_by_dataset(datasets: Mapping[str, Sequence[Record]]) -> pd.DataFrame:
    """Long table: dataset × language × field counts, for comparing imported benchmarks."""
    import pandas as pd

    frames = []
    for name, recs in datasets.items():
        df = coverage(recs).reset_index()
        df.insert(0, "dataset", name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def examples_table(records: Sequence[Record], languages: Sequence[str], *, per_language: int = 1,
                   relation: str | None = None) -> pd.DataFrame:
    """The first ``per_language`` records (optionally of one relation) shown in each language."""
    import pandas as pd

    chosen = [r for r in records if relation is None or r.meta.get("relation") == relation][:per_language]
    rows = []
    for r in chosen:
        for lang in languages:
            if lang not in r.edit:
                continue
            v = r.for_language(lang)
            rows.append({"example_id": r.example_id, "language": lang, "prompt": v.prompt,
                         "target_true": v.target_true, "target_new": v.target_new,
                         "paraphrase": v.paraphrase_prompts[0] if v.paraphrase_prompts else None,
                         "multi_hop_question": v.multi_hop_questions[0] if v.multi_hop_questions else None,
                         "multi_hop_new_answer": v.multi_hop_new_answer})
    return pd.DataFrame(rows)


def build_stats_frame(stats: Any) -> pd.DataFrame:
    """``stats``: a :class:`memla_utils.mkeb.builder.BuildStats` (not imported: the builder imports this module
    through the card). One row per relation: facts read, records dropped by each check of the builder, records kept."""
    import pandas as pd

    return pd.DataFrame({"facts": stats.facts, "dropped: answer in prompt": stats.dropped_leak,
                         "dropped: no target": stats.dropped_no_target,
                         "dropped: no multi-hop": stats.dropped_no_multi_hop, "records": stats.records})


def records_table(records: Sequence[Record], *, show_text: bool) -> pd.DataFrame:
    """One row per record: its id and edit prompt in each language, or (``show_text=False``: runs on MzsRE /
    Bi-ZsRE, whose executed notebooks are tracked while their records are never copied) only its languages."""
    import pandas as pd

    return pd.DataFrame([{"example_id": r.example_id,
                          **({lang: r.for_language(lang).prompt for lang in r.languages} if show_text
                             else {"languages": ",".join(r.languages)})} for r in records])


def counts_figure(counts: pd.DataFrame, *, title: str = "MKEB records per relation and language"):
    """Heatmap of :func:`counts_by_relation` (annotated), with language codes only so no CJK/Thai font is needed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(0.6 * max(4, counts.shape[1]) + 1.5, 0.45 * max(3, counts.shape[0]) + 1.2))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, linewidths=0.5)
    ax.set_xlabel("language")
    ax.set_ylabel("relation")
    ax.set_title(f"{title} (total {int(counts.sum(axis=0).max())} records)")
    fig.tight_layout()
    return fig
