"""Where critic's messages go when the caller passes no `log`: standard error, each line as `critic: …`."""

from __future__ import annotations

import sys


def to_stderr(line: str) -> None:
    print(f"critic: {line}", file=sys.stderr)
