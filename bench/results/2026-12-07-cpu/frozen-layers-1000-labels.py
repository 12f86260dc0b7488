"""Fine-tuning MiniLM at 1,000 IMDB labels with parts of it kept as pretrained (docs/benchmarks.md, "A retrain at
1,000 labels"; output in frozen-layers-1000-labels.jsonl). The store: bench/active_learning.py's seed-0 pool of
5,000 with its first 1,000 labelled (as its --retrain-check builds it); the retrain's flags (128 tokens, batches of
8, --pair-epochs 0, no cascade); accuracy on the pool's 1,000 test reviews, long ones cut.

Variants: all (everything learns), emb (the word embeddings kept), layersN (the embeddings and the lowest N layers
kept: what `--frozen-layers N` does now; these runs froze them here, before the setting existed).

    python make-store.py; python frozen-layers-1000-labels.py VARIANT SEED
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
import active_learning  # noqa: E402

from critic import config  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402
from critic.training import fine_tuning, train  # noqa: E402

variant, seed = sys.argv[1], int(sys.argv[2])
original = fine_tuning.FineTuning.training_step


def training_step(self, machine, total):
    m = self.model
    if variant != "all":
        m.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    if variant.startswith("layers"):
        m.base_model.embeddings.requires_grad_(False)
        for layer in m.base_model.encoder.layer[: int(variant[6:])]:
            layer.requires_grad_(False)
    return original(self, machine, total)


fine_tuning.FineTuning.training_step = training_step
_, test, _ = active_learning.pool_and_test("imdb", 5000, 1000, 0)
settings = dict(
    data="/tmp/rtc/s.db",
    model="minilm",
    output=f"/tmp/frz/m-{variant}-{seed}",
    max_length=128,
    batch_size=8,
    pair_epochs=0,
    cascade=False,
    seed=seed,
)
t = time.perf_counter()
out = train.train(config.build(settings), progress=False)
secs = time.perf_counter() - t
clf = Classifier.load(out, long_reviews="truncate")
acc = float((np.array(clf.predict(test["text"].tolist())) == test["label"].to_numpy()).mean())
print(json.dumps({"variant": variant, "seed": seed, "train_s": round(secs, 1), "test_acc": acc}), flush=True)
