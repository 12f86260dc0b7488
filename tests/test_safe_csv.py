"""Every CSV critic writes neutralises formulas, its header included (the second security review found the header
cells of scored files and label_issues.csv, stats.csv and trials.csv written as they came)."""

import re
from pathlib import Path

import pandas as pd

from critic.safe_csv import write_frame

SRC = Path(__file__).resolve().parents[1] / "src" / "critic"


def test_a_frame_is_written_with_its_formulas_as_text(tmp_path):
    frame = pd.DataFrame({"=cmd()": ["@SUM(A1)", "a fine film", "-2 awful"], "score": [-3.5, 0.5, 1.0]})
    write_frame(frame, tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines == ["'=cmd(),score", "'@SUM(A1),-3.5", "a fine film,0.5", "'-2 awful,1.0"]


def test_no_module_writes_a_csv_but_through_safe_csv():
    writers = re.compile(r"\.to_csv\(|csv\.writer\(|csv\.DictWriter\(|\.write_csv\(")
    found = [
        f"{path.relative_to(SRC)}:{number}"
        for path in SRC.rglob("*.py")
        if path.name != "safe_csv.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if writers.search(line)
    ]
    assert found == ["inference/scale.py:" + str(ray_csv_line())]  # Ray's writer, over batches made safe first


def ray_csv_line() -> int:
    lines = (SRC / "inference" / "scale.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if "map_batches(safe_frame" in line)
