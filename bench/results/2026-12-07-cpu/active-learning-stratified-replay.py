"""Picks that reduce the variance of the learner, replayed offline (docs/benchmarks.md, "Active learning").

The loop's learner at these counts (a logistic regression, C = 0.01, on MiniLM's frozen mean embedding of the first
256 tokens, layer-normed; a tenth of the labels held out as the loop's validation split), refitted after every
round of 10 picks (a start of 20), on the pool of 5,000 and the 1,000 test reviews of bench/active_learning.py's seed
0, cached by active-learning-replay.py (2026-12-06) in /tmp/alsim.npz. Random: the seeded orders of that script.

    [SPACE=tfidf] [ROUNDS=bench] [CACHE=/tmp/alsim-seed1.npz] python active-learning-stratified-replay.py SEEDS STRATEGY...

STRATEGY: random; strata (k-means of the unlabelled pool's embedding into as many clusters as picks, a random
member of each); balanced (half the picks at random among the reviews the model calls positive, half among those it
calls negative); strata+balanced; cal (contrastive: the largest mean KL divergence between a review's prediction and
those of its 10 nearest labelled reviews, Margatina et al. 2021); density (margin times the mean cosine similarity to
the 20 nearest of 2,000 pool reviews: information density); density4 (that similarity to the 4th power);
density-spread (density's 10 x picks best clustered into as many groups as picks, the best of each); margin; dense
(the similarity alone: typical reviews); critic (critic.labelling.selection.pick as the loop calls it, on a
sample of 1,000 of the pool: since 2026-12-07, density-spread with a 10% random share).
"""

import os
import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression

d = np.load(os.environ.get("CACHE", "/tmp/alsim.npz"), allow_pickle=True)
P, T, py, ty = d["pool"], d["test"], d["pool_y"].astype(int), d["test_y"].astype(int)
layer_norm = lambda x: (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)  # noqa: E731
P, T = layer_norm(P), layer_norm(T)
UNIT = P / np.linalg.norm(P, axis=1, keepdims=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))
from critic.labelling.selection import text_features  # noqa: E402

TFIDF = text_features(list(d["pool_text"]))
if os.environ.get("SPACE") == "tfidf":  # typicality and strata in critic's TF-IDF space instead of the embedding's
    UNIT = TFIDF
MEASURED = [20, 50, 100, 150, 200, 250, 400]
START, BATCH, END = 20, 10, 400
# ROUNDS=bench: the bench's rounds (20, 50, 100, 150, 200, 250), then 50 a round to 400
SCHEDULE = [50, 100, 150, 200, 250, 300, 350, 400] if os.environ.get("ROUNDS") == "bench" else None


def fit(indices):
    indices = np.array(indices)
    keep = indices[np.arange(len(indices)) % 10 != 0]
    if len(set(py[keep])) < 2:
        keep = indices
    return LogisticRegression(C=0.01, max_iter=2000).fit(P[keep], py[keep])


def accuracy(model):
    return (model.predict(T) == ty).mean()


def strata(rest, count, rng, _model=None, _labelled=None):
    clusters = KMeans(count, n_init=1, random_state=int(rng.integers(1e9))).fit_predict(UNIT[rest])
    return [int(rng.choice(rest[clusters == c])) for c in range(count)]


def balanced(rest, count, rng, model, _labelled=None, within=None):
    called = model.predict(P[rest])
    picks = []
    for c, share in ((1, count // 2), (0, count - count // 2)):
        mine = rest[called == c]
        picks += (within or (lambda r, n, g: list(g.choice(r, n, replace=False))))(mine, share, rng)
    return [int(i) for i in picks]


def strata_balanced(rest, count, rng, model, labelled=None):
    return balanced(rest, count, rng, model, within=lambda r, n, g: strata(r, n, g))


def cal(rest, count, rng, model, labelled):
    labelled = np.array(labelled)
    probs_rest, probs_lab = model.predict_proba(P[rest]), model.predict_proba(P[labelled])
    neighbours = np.argsort(-(UNIT[rest] @ UNIT[labelled].T), axis=1)[:, :10]
    kl = (probs_lab[neighbours] * np.log(probs_lab[neighbours] / probs_rest[:, None, :])).sum(-1).mean(1)
    return [int(i) for i in rest[np.argsort(-kl)[:count]]]


def typicality(rest, rng):
    sims = UNIT[rest] @ UNIT[rng.choice(rest, min(2000, len(rest)), replace=False)].T
    return np.sort(sims, axis=1)[:, -21:-1].mean(1)


def uncertainty(rest, model):
    probs = model.predict_proba(P[rest])
    return 1 - np.abs(probs[:, 1] - probs[:, 0])


def density(rest, count, rng, model, _labelled=None, beta=1.0):
    score = uncertainty(rest, model) * typicality(rest, rng) ** beta
    return [int(i) for i in rest[np.argsort(-score)[:count]]]


def density_spread(rest, count, rng, model, _labelled=None):
    """density's 10 × count best, clustered into count groups, the best of each (as critic spreads its margins)."""
    score = uncertainty(rest, model) * typicality(rest, rng)
    candidates = np.argsort(-score)[: 10 * count]
    groups = KMeans(count, n_init=1, random_state=int(rng.integers(1e9))).fit_predict(UNIT[rest[candidates]])
    best = {}
    for candidate, group in zip(candidates, groups):
        best.setdefault(group, candidate)
    return [int(rest[i]) for i in best.values()]


def critic_picks(rest, count, rng, model, labelled):
    """critic.labelling.selection as the loop calls it: a sample of 1,000 of the pool, its TF-IDF features, the
    embeddings given, the 10% random share."""
    from critic.labelling import selection

    sample = rng.choice(rest, min(1000, len(rest)), replace=False)
    counts = np.bincount(py[labelled], minlength=2).tolist()
    picks = selection.pick(
        count,
        TFIDF[sample],
        model.predict_proba(P[sample]),
        counts,
        ["negative", "positive"],
        seed=int(rng.integers(2**31)),
        uncertain=selection.uncertain_pays(counts),
        embeddings=P[sample],
    )
    return [int(sample[p.position]) for p in picks]


def margin(rest, count, rng, model, _labelled=None):
    return [int(i) for i in rest[np.argsort(-uncertainty(rest, model))[:count]]]


def dense(rest, count, rng, model, _labelled=None):
    return [int(i) for i in rest[np.argsort(-typicality(rest, rng))[:count]]]


STRATEGIES = {"strata": strata, "balanced": balanced, "strata+balanced": strata_balanced, "cal": cal, "density": density,
    "margin": margin, "dense": dense, "density-spread": density_spread, "critic": critic_picks, "density4": lambda *a: density(*a, beta=4.0)}


def run_random(seed):
    order = np.random.default_rng(seed + 100).permutation(len(P))
    return {count: accuracy(fit(order[:count])) for count in MEASURED}


def run(seed, strategy):
    rng = np.random.default_rng(seed)
    labelled = strata(np.arange(len(P)), START, rng)
    found, model = {START: accuracy(fit(labelled))}, fit(labelled)
    while len(labelled) < END:
        rest = np.setdiff1d(np.arange(len(P)), labelled)
        size = next(c for c in SCHEDULE if c > len(labelled)) - len(labelled) if SCHEDULE else BATCH
        labelled += STRATEGIES[strategy](rest, size, rng, model, labelled)
        model = fit(labelled)
        if len(labelled) in MEASURED:
            found[len(labelled)] = accuracy(model)
    return found


seeds = range(int(sys.argv[1]))
baseline = [run_random(s) for s in seeds]
for name in ["random"] + sys.argv[2:]:
    runs = baseline if name == "random" else [run(s, name) for s in seeds]
    gaps = {c: np.array([r[c] - b[c] for r, b in zip(runs, baseline)]) * 100 for c in MEASURED}
    print(
        f"{name:16s}",
        " ".join(f"{c}:{np.mean([r[c] for r in runs]) * 100:.1f}({gaps[c].mean():+.1f}±{gaps[c].std():.1f})" for c in MEASURED),
        flush=True,
    )
