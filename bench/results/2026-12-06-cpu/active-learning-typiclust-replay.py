"""TypiClust-style picks (the most typical review of the largest uncovered cluster of MiniLM's mean embedding) against random, replayed with the loop's frozen learner on active-learning-replay.py's cached embeddings (IMDB seed 0's pool): python active-learning-typiclust-replay.py SEEDS random|central-then-random|typi|typi+rand"""
import sys
import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
sys.path[:0] = [str(__import__("pathlib").Path(__file__).resolve().parents[3] / "src")]
from critic.labelling import selection

d = np.load(sys.argv[3] if len(sys.argv) > 3 else "/tmp/alsim.npz", allow_pickle=True)
P, T, py, ty = d["pool"], d["test"], d["pool_y"].astype(int), d["test_y"].astype(int)
ln = lambda x: (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
P, T = ln(P), ln(T)
E = P / np.linalg.norm(P, axis=1, keepdims=True)
spaces = {"emb": E, "tfidf": None}
MEASURED = [20, 50, 100, 150, 200, 250, 400]
ROUNDS = [20, 50, 100, 150, 200, 250, 300, 350, 400]

def fit(idx):
    idx = np.array(idx); keep = idx[np.arange(len(idx)) % 10 != 0]
    if len(set(py[keep])) < 2: keep = idx
    return LogisticRegression(C=0.01, max_iter=2000).fit(P[keep], py[keep])

acc = lambda m: (m.predict(T) == ty).mean()

def typical(X, k=20):
    k = min(k, len(X) - 1)
    if k < 1: return np.ones(len(X))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    return 1 / (dist[:, 1:].mean(1) + 1e-9)

def typiclust(X, labelled, budget, rng):
    K = len(labelled) + budget
    km = (KMeans(K, n_init=1, random_state=int(rng.integers(2**31))) if K <= 50 else MiniBatchKMeans(K, n_init=1, random_state=int(rng.integers(2**31)), batch_size=1024)).fit(X)
    lab = km.labels_
    sizes = np.bincount(lab, minlength=K)
    covered = np.bincount(lab[labelled], minlength=K) if len(labelled) else np.zeros(K, int)
    picks = []
    taken = np.zeros(len(X), bool); taken[labelled] = True
    for _ in range(budget):
        ok = sizes >= 5
        cand = np.flatnonzero(ok) if ok.any() else np.arange(K)
        c = cand[np.lexsort((-sizes[cand], covered[cand]))[0]]
        members = np.flatnonzero((lab == c) & ~taken)
        if not len(members):
            sizes[c] = 0; continue
        t = typical(X[members])
        p = members[np.argmax(t)]
        picks.append(p); taken[p] = True; covered[c] += 1
    return picks

def run(seed, strategy):
    rng = np.random.default_rng(seed)
    if strategy == "random":
        order = rng.permutation(len(P)); return {c: acc(fit(order[:c])) for c in MEASURED}
    labelled, found = [], {}
    for target in ROUNDS:
        budget = target - len(labelled)
        if strategy == "typi":
            picks = typiclust(E, labelled, budget, rng)
        elif strategy == "typi+rand":  # a tenth uniform
            r = int(round(budget * 0.1))
            picks = typiclust(E, labelled, budget - r, rng)
            rest = np.setdiff1d(np.arange(len(P)), labelled + picks)
            picks += list(rng.choice(rest, r, replace=False))
        elif strategy == "central-then-random":
            if not labelled:
                picks = list(selection.central(E, budget, rng))
            else:
                rest = np.setdiff1d(np.arange(len(P)), labelled); picks = list(rng.choice(rest, budget, replace=False))
        labelled += [int(p) for p in picks]
        if len(labelled) in MEASURED:
            found[len(labelled)] = acc(fit(labelled))
    return found

seeds, strategy = int(sys.argv[1]), sys.argv[2]
runs = [run(s, strategy) for s in range(seeds)]
print(strategy, " ".join(f"{c}:{np.mean([r[c] for r in runs]):.3f}±{np.std([r[c] for r in runs]):.3f}" for c in MEASURED), flush=True)
