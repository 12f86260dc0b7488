"""Cheap-stage variants: each fitted on IMDB's whole training split, probabilities saved for validation and test."""
import sys, time
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer, CountVectorizer
from sklearn.linear_model import LogisticRegression
from critic import data

out = sys.argv[1]
ds = data.load("imdb")
train, val, test = (ds.split(s) for s in ("train", "validation", "test"))

cleaning = "default"  # the quickstart model's
clean = data.cleaner(cleaning)
T = [clean(t) for t in train.text]; V = [clean(t) for t in val.text]; S = [clean(t) for t in test.text]
y = train.label.to_numpy()
np.save(f"{out}/val_labels.npy", val.label.to_numpy()); np.save(f"{out}/test_labels.npy", test.label.to_numpy())
print(len(T), len(V), len(S), "cleaning", cleaning, flush=True)

def save(name, pv, pt, secs):
    np.save(f"{out}/val_{name}.npy", pv); np.save(f"{out}/test_{name}.npy", pt)
    print(f"{name}: fit {secs:.0f}s val acc {np.mean(pv.argmax(1)==val.label.to_numpy()):.4f} test acc {np.mean(pt.argmax(1)==test.label.to_numpy()):.4f}", flush=True)

def tfidf(name, C=10.0, ngram=(1, 2), min_df=2, binary=False, sublinear=True):
    t = time.time()
    vec = TfidfVectorizer(ngram_range=ngram, min_df=min_df, max_df=0.95, sublinear_tf=sublinear, binary=binary, dtype=np.float32)
    X = vec.fit_transform(T)
    lr = LogisticRegression(C=C, max_iter=2000).fit(X, y)
    save(name, lr.predict_proba(vec.transform(V)), lr.predict_proba(vec.transform(S)), time.time() - t)

def nbsvm(name, C=1.0, ngram=(1, 2), alpha=1.0, tf="binary"):
    t = time.time()
    if tf == "binary":
        vec = CountVectorizer(ngram_range=ngram, min_df=2, max_df=0.95, binary=True, dtype=np.float32)
    else:
        vec = TfidfVectorizer(ngram_range=ngram, min_df=2, max_df=0.95, sublinear_tf=True, dtype=np.float32)
    X = vec.fit_transform(T).tocsr()
    p = alpha + np.asarray(X[y == 1].sum(0)).ravel(); q = alpha + np.asarray(X[y == 0].sum(0)).ravel()
    r = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
    R = sparse.diags(r)
    lr = LogisticRegression(C=C, max_iter=2000).fit(X @ R, y)
    f = lambda texts: lr.predict_proba(vec.transform(texts) @ R)
    save(name, f(V), f(S), time.time() - t)

which = sys.argv[3].split(",") if len(sys.argv) > 3 else ["base"]
for w in which:
    if w == "base": tfidf("base")
    elif w.startswith("C"): tfidf(w, C=float(w[1:]))
    elif w == "tri": tfidf("tri", ngram=(1, 3), min_df=3)
    elif w.startswith("nb"):  # nbC
        nbsvm(w, C=float(w[2:]))
    elif w.startswith("nbt"):
        nbsvm(w, C=float(w[3:]), tf="tfidf")
