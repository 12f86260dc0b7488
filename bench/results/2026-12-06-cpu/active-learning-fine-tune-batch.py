"""Fine-tuning MiniLM on 600 random IMDB labels of bench/active_learning.py seed 0's pool, split as the loop's store splits them, scored on its 1,000 test reviews: the loop's fine-tuning settings (1 epoch, 128 tokens) with batches of 16 or 8, or 2 epochs, over training seeds.

    python active-learning-fine-tune-batch.py LABELS VARIANT SEED
"""
import sys, json, time
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
import active_learning
from critic.data.store import Store
from critic import config
from critic.training import train

labels, variant, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
root = Path(f"/tmp/fine-tune-batch/{labels}-{variant}-{seed}"); root.mkdir(parents=True, exist_ok=True)
pool, test, classes = active_learning.pool_and_test("imdb", 5000, 1000, 0)
store_path = root / "store.db"
if not store_path.exists():
    store = Store(store_path, create=True, labels=classes)
    ids, _ = store.add_reviews(pool["text"].tolist(), source="pool")
    order = np.random.default_rng(0).permutation(len(pool))
    for p in order[:labels]:
        store.add_label(ids[p], pool["label"].iloc[p], "simulated")
    store.close() if hasattr(store, "close") else None
variants = {
    "base": dict(epochs=1, batch_size=16, lr=1e-4),
    "bs8": dict(epochs=1, batch_size=8, lr=1e-4),
    "ep2": dict(epochs=2, batch_size=16, lr=1e-4),
    "bs8lr2": dict(epochs=1, batch_size=8, lr=2e-4),
    "lr2": dict(epochs=1, batch_size=16, lr=2e-4),
    "ep3": dict(epochs=3, batch_size=16, lr=1e-4),
}
settings = dict(model="minilm", data=str(store_path), preset="cpu", max_length=128, cascade=False, pair_epochs=0,
                output=str(root / "model"), seed=seed, **variants[variant])
started = time.perf_counter()
out = train.train(config.build(settings), progress=False)
seconds = time.perf_counter() - started
from critic.inference.predict import Classifier
pred = np.array(Classifier.load(out).predict(test["text"].tolist()))
acc = float((pred == test["label"].to_numpy()).mean())
print(json.dumps({"labels": labels, "variant": variant, "seed": seed, "accuracy": acc, "seconds": seconds}), flush=True)
