"""--frozen-layers 2 against 3 at 1,000 IMDB labels (the loop's retrain flags; the store of make-store.py), 6 training
seeds, accuracy on the pool's 1,000 test reviews with long ones cut. Output: frozen-layers-no-dropout-1000-labels.jsonl
(the frozen layers' dropout off, as `--frozen-layers` does since); the same script at 3ba7b4e (their dropout on) gave
frozen-layers-1000-labels-seeds-4-6.jsonl for seeds 4-6 (seeds 1-3: frozen-layers-1000-labels.jsonl)."""
import json, subprocess, sys, time
from pathlib import Path
import numpy as np
sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
import active_learning
from critic.inference.predict import Classifier
_, test, _ = active_learning.pool_and_test("imdb", 5000, 1000, 0)
for seed in (1, 2, 3, 4, 5, 6):
    for layers in (2, 3):
        out = f"/tmp/frz/m-{layers}-{seed}"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "critic.cli", "train", "--data", "/tmp/rtc/s.db", "--model", "minilm",
            "--output", out, "--max-length", "128", "--batch-size", "8", "--frozen-layers", str(layers),
            "--pair-epochs", "0", "--no-cascade", "--seed", str(seed)], check=True, capture_output=True)
        secs = time.perf_counter() - t
        clf = Classifier.load(out, long_reviews="truncate")
        acc = float((np.array(clf.predict(test["text"].tolist())) == test["label"].to_numpy()).mean())
        print(json.dumps({"layers": layers, "seed": seed, "process_s": round(secs, 1), "test_acc": acc}), flush=True)
