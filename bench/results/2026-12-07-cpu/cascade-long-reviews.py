"""Where the cascade pays most: long reviews scored in sliding windows (`--long-reviews windows`: every window of a
long review is a forward pass). 1,000 seeded IMDB test reviews, `Classifier.load(MODEL, backend="openvino-int8",
long_reviews=...)` with the cascade and without it, truncated and in windows; each scores them once a round, in
turn, 3 rounds; the median rate and the accuracy.
    python cascade-long-reviews.py MODEL"""
import statistics, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))
from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402

model = sys.argv[1]
frame = data.load_dataset("imdb", split="test", size=1000, seed=1)
texts, labels = frame["text"].tolist(), frame["label"].to_numpy()
arms = {
    f"{mode}, {'cascade' if cascade else 'model alone'}": Classifier.load(
        model, backend="openvino-int8", long_reviews=mode, cascade=cascade
    )
    for mode in ("truncate", "windows")
    for cascade in (True, False)
}
for classifier in arms.values():
    classifier.predict_proba(texts[:32])  # warm
rates, accuracy, share = {name: [] for name in arms}, {}, {}
print(cpu_name(), flush=True)
for round_ in range(3):
    for name, classifier in arms.items():
        started = time.perf_counter()
        probs, cheap = classifier.answer(texts)
        rates[name].append(len(texts) / (time.perf_counter() - started))
        accuracy[name], share[name] = float(np.mean(probs.argmax(1) == labels)), float(cheap.mean())
        print(round_, name, f"{rates[name][-1]:.1f} reviews/s", flush=True)
print(f"\n{'':28}{'reviews/s':>10}{'accuracy':>10}{'cheap share':>13}")
for name in arms:
    print(f"{name:28}{statistics.median(rates[name]):10.1f}{accuracy[name]:10.2%}{share[name]:13.1%}")
for mode in ("truncate", "windows"):
    ratio = statistics.median(rates[f"{mode}, cascade"]) / statistics.median(rates[f"{mode}, model alone"])
    print(f"{mode}: the cascade {ratio:.2f}x the model alone")
