import sys, time, numpy as np
from critic import data
from critic.inference.predict import Classifier
clf = Classifier.load(sys.argv[1], cascade=False)
ds = data.load("imdb")
for name, split in (("val", "validation"), ("test", "test")):
    frame = ds.split(split)
    assert (np.load(f"/tmp/cas/{name}_labels.npy") == frame.label.to_numpy()).all()
    t = time.perf_counter(); np.save(f"/tmp/cas/{name}_model.npy", clf.predict_proba(frame.text.tolist())); print(name, time.perf_counter() - t, flush=True)
