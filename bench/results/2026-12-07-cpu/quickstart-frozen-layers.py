"""The quickstart recipe (`--preset cpu`: MiniLM, 2,000 IMDB training reviews, 256 tokens, 1 epoch, batches of 16) with
FROZEN layers kept (`--frozen-layers`), training seed SEED; accuracy on 1,000 IMDB test reviews (seed 42). Two runs side
by side, one thread each (OMP_NUM_THREADS=1), on 2 AMD EPYC Zen 3 cores; output in quickstart-frozen-layers.txt.

    OMP_NUM_THREADS=1 python quickstart-frozen-layers.py FROZEN SEED
"""

import json, sys, time
import numpy as np
from critic import config, data
from critic.inference.predict import Classifier
from critic.training import train
frozen, seed = int(sys.argv[1]), int(sys.argv[2])
settings = dict(preset="cpu", output=f"/tmp/qsf/m-{frozen}-{seed}", seed=seed, frozen_layers=frozen, cascade=False)
t = time.perf_counter()
out = train.train(config.build(settings), progress=False)
secs = time.perf_counter() - t
test = data.load_dataset("imdb", split="test", size=1000, seed=42)
clf = Classifier.load(out)
names = clf.labels
truth = [names[i] if not isinstance(i, str) else i for i in test["label"]]
acc = float((np.array(clf.predict(test["text"].tolist())) == np.array(truth)).mean())
print(json.dumps({"frozen": frozen, "seed": seed, "train_s": round(secs, 1), "test_acc": acc}), flush=True)
