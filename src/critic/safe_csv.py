"""Every CSV critic writes goes through here: a cell that a spreadsheet would run as a formula is written as text."""

import csv

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A text cell that a spreadsheet would run as a formula (it starts with = + - @, a tab or a carriage return),
    behind a single quote so that it reads as text, as OWASP's CSV-injection advice says; numbers (-3.5) and
    everything else as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


class SafeWriter:
    """csv.writer whose every cell, the header's included, is spreadsheet_safe."""

    def __init__(self, handle, **options):
        self.writer = csv.writer(handle, **options)

    def writerow(self, row) -> None:
        self.writer.writerow([spreadsheet_safe(value) for value in row])

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)


class SafeDictWriter(SafeWriter):
    """csv.DictWriter's interface over SafeWriter: rows as dicts in the order of `fieldnames` (others ignored)."""

    def __init__(self, handle, fieldnames, **options):
        super().__init__(handle, **options)
        self.fieldnames = list(fieldnames)

    def writeheader(self) -> None:
        self.writerow(self.fieldnames)

    def writedict(self, row: dict) -> None:
        self.writerow([row.get(name, "") for name in self.fieldnames])

    def writedicts(self, rows) -> None:
        for row in rows:
            self.writedict(row)


def safe_frame(frame):
    """A copy of a pandas DataFrame with every text cell and column name spreadsheet_safe (Ray's CSV writer takes
    its batches so)."""
    import pandas as pd

    safe = frame.rename(columns=spreadsheet_safe)
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):  # text, however pandas holds it
            safe[column] = safe[column].map(spreadsheet_safe).astype(object)
    return safe


def write_frame(frame, path) -> None:
    """A pandas DataFrame to CSV at `path`, every text cell and column name spreadsheet_safe."""
    safe_frame(frame).to_csv(path, index=False)
