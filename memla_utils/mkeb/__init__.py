"""MKEB records: schema, validation, I/O, the offline builder and importers of public benchmarks."""
from .record import EditTarget, LanguageView, Record, RecordError

__all__ = ["EditTarget", "LanguageView", "Record", "RecordError"]
