"""MKEB records: schema, validation, I/O, the offline builder and importers of public benchmarks.

The model-based ``known_only`` filter lives in :mod:`memla_utils.mkeb.known` (imported on demand: it needs a model).
"""
from .builder import RELATIONS, BuildConfig, BuildResult, BuildStats, build_mkeb, build_records, load_templates
from .importers import (
                        DATASETS,
                        import_all,
                        import_bizsre,
                        import_bmike53,
                        import_mlake,
                        import_mlike,
                        import_mzsre,
                        read_test_ids,
                        resolve_shared_dir,
)
from .io import LoadReport, load_records, read_records, restrict_languages, save_records, validate_record
from .quality import quality_problems
from .record import EditTarget, LanguageView, Record, RecordError
from .summary import (
                        build_stats_frame,
                        counts_by_relation,
                        counts_figure,
                        coverage,
                        coverage_by_dataset,
                        examples_table,
                        records_table,
)

__all__ = [
    "EditTarget", "LanguageView", "Record", "RecordError",
    "LoadReport", "load_records", "read_records", "restrict_languages", "save_records", "validate_record",
    "BuildConfig", "BuildResult", "BuildStats", "RELATIONS", "build_mkeb", "build_records", "load_templates",
    "DATASETS", "import_all", "import_bizsre", "import_bmike53", "import_mlake", "import_mlike", "import_mzsre",
    "read_test_ids", "resolve_shared_dir", "quality_problems", "counts_by_relation", "counts_figure", "coverage",
    "coverage_by_dataset", "examples_table", "build_stats_frame", "records_table",
]
