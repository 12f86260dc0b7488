"""Active learning replayed offline (the figures in docs/benchmarks.md, "Active learning", why the picks do not pay).

The loop's learner at these counts (a logistic regression, C = 0.01 unless given, on MiniLM's frozen mean embedding
of the first 256 tokens, layer-normed; a tenth of the labels held out as the loop's validation split) refitted after
every round, on the pool and test reviews of bench/active_learning.py's seed 0. Random: seeded orders of the pool.
Active: a diverse start of 20, then rounds of BATCH picked by critic.labelling.selection over the whole pool. Mean
accuracy on the 1,000 test reviews over 5 seeds of picks.

    python active-learning-replay.py 1 all [C]          (the whole pool labelled: the learner's ceiling here)
    python active-learning-replay.py SEEDS random [C]
    python active-learning-replay.py SEEDS BATCH,SPACE,COLD_SPACE,POOL,CANDIDATES_PER_PICK [C]
    (SPACE: tfidf or emb, the space the uncertain candidates are clustered in; C: a number, or cv)

With PSEUDO=K in the environment (added 2026-12-07) the learner self-trains: after each fit, the K pool reviews it is
surest of (K/2 per predicted class) join the labelled ones with its own answers as labels, and it fits again.
"""

import os
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
from critic.labelling import selection  # noqa: E402

CACHE = Path("/tmp/alsim.npz")


def embeddings():
    import torch
    from transformers import AutoModel, AutoTokenizer

    import active_learning
    from critic.data import catalogue, sources

    path = catalogue.resolve_model("minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval()
    pool, test, _ = active_learning.pool_and_test("imdb", 5000, 1000, 0)

    def mean(texts):
        rows = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            for start in range(0, len(texts), 32):
                batch = tokenizer(
                    texts[start : start + 32], truncation=True, max_length=256, padding=True, return_tensors="pt"
                )
                hidden, mask = model(**batch).last_hidden_state.float(), batch["attention_mask"].unsqueeze(-1).float()
                rows.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
        return np.concatenate(rows)

    np.savez(
        CACHE,
        pool=mean(pool.text.tolist()),
        test=mean(test.text.tolist()),
        pool_y=(pool.label == "positive").values,
        test_y=(test.label == "positive").values,
        pool_text=np.array(pool.text.tolist(), dtype=object),
    )


if not CACHE.exists():
    embeddings()
d = np.load(CACHE, allow_pickle=True)
P, T, py, ty = d["pool"], d["test"], d["pool_y"].astype(int), d["test_y"].astype(int)
layer_norm = lambda x: (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)  # noqa: E731
P, T = layer_norm(P), layer_norm(T)
spaces = {"tfidf": selection.text_features(list(d["pool_text"])), "emb": P / np.linalg.norm(P, axis=1, keepdims=True)}
MEASURED = [20, 50, 100, 150, 200, 250, 400]
C = {"value": 0.01}


def fit(indices):
    indices = np.array(indices)
    keep = indices[np.arange(len(indices)) % 10 != 0]
    if len(set(py[keep])) < 2:
        keep = indices
    if C["value"] == "cv":
        from sklearn.linear_model import LogisticRegressionCV

        folds = min(5, int(np.bincount(py[keep]).min()))
        if folds >= 2:
            grid = [0.003, 0.01, 0.03, 0.1, 0.3, 1]
            return LogisticRegressionCV(Cs=grid, cv=folds, max_iter=2000, scoring="neg_log_loss").fit(P[keep], py[keep])
        return LogisticRegression(C=0.01, max_iter=2000).fit(P[keep], py[keep])
    return LogisticRegression(C=C["value"], max_iter=2000).fit(P[keep], py[keep])


PSEUDO = int(os.environ.get("PSEUDO", "0"))


def fit_self_training(indices):
    """`fit`, then again with the PSEUDO pool reviews it is surest of labelled with its own answers."""
    model = fit(indices)
    if not PSEUDO:
        return model
    rest = np.setdiff1d(np.arange(len(P)), indices)
    answers = model.predict_proba(P[rest])
    sure = []
    for c in (0, 1):
        mine = np.flatnonzero(answers.argmax(1) == c)
        sure += [(int(rest[i]), c) for i in mine[np.argsort(-answers[mine, c])[: PSEUDO // 2]]]
    rows = np.r_[np.array(indices), [i for i, _ in sure]].astype(int)
    labels = np.r_[py[np.array(indices)], [c for _, c in sure]]
    return LogisticRegression(C=C["value"], max_iter=2000).fit(P[rows], labels)


def accuracy(model):
    return (model.predict(T) == ty).mean()


def run_random(seed):
    order = np.random.default_rng(seed + 100).permutation(len(P))
    return {count: accuracy(fit_self_training(order[:count])) for count in MEASURED}


def run_active(seed, batch, space, cold, pool_size, factor, end=400):
    selection.CANDIDATES_PER_PICK = factor
    rng = np.random.default_rng(seed)
    labelled, found, model = [], {}, None
    while len(labelled) < end:
        rest = np.setdiff1d(np.arange(len(P)), labelled)
        sample = rng.choice(rest, min(pool_size, len(rest)), replace=False)
        probs = model.predict_proba(P[sample]) if model is not None else None
        features = (cold if model is None else space)[sample]
        picks = selection.pick(20 if model is None else batch, features, probs, [1, 1], seed=int(rng.integers(1e9)))
        labelled += [int(sample[p.position]) for p in picks]
        model = fit_self_training(labelled)
        if len(labelled) in MEASURED:
            found[len(labelled)] = accuracy(model)
    return found


seeds = range(int(sys.argv[1]))
if len(sys.argv) > 3:
    C["value"] = sys.argv[3] if sys.argv[3] == "cv" else float(sys.argv[3])
if sys.argv[2] == "all":
    runs = [{len(P): accuracy(LogisticRegression(C=C["value"], max_iter=5000).fit(P, py))}]
    MEASURED = [len(P)]
elif sys.argv[2] == "random":
    runs = [run_random(s) for s in seeds]
else:
    batch, space, cold, size, factor = sys.argv[2].split(",")
    runs = [run_active(s, int(batch), spaces[space], spaces[cold], int(size), int(factor)) for s in seeds]
print(sys.argv[2:], " ".join(f"{c}:{np.mean([r[c] for r in runs]):.3f}" for c in MEASURED if c in runs[0]), flush=True)
