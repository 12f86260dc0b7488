"""The store of frozen-layers-1000-labels.py: the seed-0 pool of bench/active_learning.py, its first 1,000 labelled."""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
import active_learning  # noqa: E402

from critic.data import store as stores  # noqa: E402

pool, test, _ = active_learning.pool_and_test("imdb", 5000, 1000, 0)
frame = pool.assign(label=[*pool["label"][:1000], *[""] * (len(pool) - 1000)])
frame.to_csv("/tmp/rtc/partly.csv", index=False)
with stores.opened("/tmp/rtc/s.db", create=True) as s:
    print(s.import_file("/tmp/rtc/partly.csv"))
