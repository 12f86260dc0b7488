"""Random picks of seed 0's pool at COUNT labels, the loop's few-label retrain with variants: seconds and accuracy."""
import sys, time, json
from pathlib import Path
sys.path[:0] = ["/work/main/bench", "/work/main/src"]
import numpy as np
import active_learning as al
from critic.data.store import Store
from critic.labelling.session import LoopSettings, train_in_process

count = int(sys.argv[1]); variants = sys.argv[2:]
pool, test, classes = al.pool_and_test("imdb", 5000, 1000, 0)
folder = Path(f"/tmp/pt/{count}"); folder.mkdir(parents=True, exist_ok=True)
db = folder / "s.db"
if not db.exists():
    store = Store(db, create=True, labels=classes)
    order = np.random.default_rng(0).permutation(len(pool))
    ids, _ = store.add_reviews(pool["text"].tolist(), source="pool")
    for position in order[:count]:
        store.add_label(ids[position], pool["label"].iloc[position], "simulated")
    store.close()
for rnd in range(2):
    for i, variant in enumerate(variants):
        settings = LoopSettings("minilm")
        settings.train_args += variant.split()
        started = time.perf_counter()
        model = train_in_process(str(db), settings, folder / f"m{i}-{rnd}")
        seconds = time.perf_counter() - started
        s = al.scores(model, test)
        print(json.dumps({"count": count, "variant": variant, "round": rnd, "seconds": round(seconds, 1), **s}), flush=True)
