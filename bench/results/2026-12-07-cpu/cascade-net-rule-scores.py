"""Step 1 of the cascade-rule comparison: the quickstart model's (and the cheap stage's) probabilities for its
validation split and the whole test split, saved as .npy; step 2 is cascade-net-rule.py. Run as
    python cascade-net-rule-scores.py MODEL OUT"""
import sys, time
from pathlib import Path
import numpy as np
from critic import data, modeling
from critic.inference import cascade
from critic.inference.predict import Classifier

model_dir = Path(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir(exist_ok=True)
clf = Classifier.load(model_dir, cascade=False)
val = clf.record.rows("validation")
record = modeling.ModelRecord.read(model_dir)
splits = record.splits(("test",))
test = splits["test"]
print(len(val), len(test), flush=True)
train = record.splits(("train",), whole_train=True)["train"]
clean = data.cleaner(record.cleaning)
cheap = cascade.CheapStage.fit([clean(t) for t in train["text"]], train["label"].to_numpy(), len(record.labels))
for name, frame in (("val", val), ("test", test)):
    texts = frame["text"].tolist()
    np.save(out / f"{name}_labels.npy", frame["label"].to_numpy())
    np.save(out / f"{name}_cheap.npy", cheap.predict_proba([clean(t) for t in texts]))
    t = time.perf_counter()
    np.save(out / f"{name}_model.npy", clf.predict_proba(texts))
    print(name, time.perf_counter() - t, flush=True)
