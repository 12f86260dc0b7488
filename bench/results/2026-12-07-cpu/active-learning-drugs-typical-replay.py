"""Active learning on drugs replayed offline (docs/benchmarks.md, "Active learning", drugs): macro F1 at 150 labels.

The loop's learner (a logistic regression on MiniLM's frozen mean embedding of the first 256 tokens, layer-normed; a
tenth of the labels held out as the loop's validation split), with or without balanced class weights (what
`--class-weights balanced` now gives the few-label regression), on bench/active_learning.py's drugs pool (its whole
training split, 783 reviews) and test (its validation and test splits, 195). Random: 150 reviews of a seeded order.
Active: rounds of 30 picked by critic.labelling.selection (a diverse start, then uncertain, rare class and random
picks), the model refitted after each. 10 seeds; the mean, and the mean difference with its spread over seeds.

    python active-learning-drugs-typical-replay.py C none|balanced RARE_SHARE RANDOM_SHARE CANDIDATES_PER_PICK [uniform|typical]
    (uniform: uniform picks where the least certain would go, as the loop did below UNCERTAIN_FROM until 2026-12-07;
    typical: the least certain weighed by typicality in the embedding, as it does since)

2026-12-07: the copy of 2026-12-06's script with `typical` added, for selection.pick as it is since (it decides
between the least certain and the rest from the label counts; the 2026-12-06 script passed `uncertain`).
"""

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
from critic.labelling import selection  # noqa: E402

CACHE = Path("/tmp/alsim-drugs.npz")
CLASSES = ["negative", "neutral", "positive"]


def embeddings():
    import torch
    from transformers import AutoModel, AutoTokenizer

    import active_learning
    from critic.data import catalogue

    path = catalogue.resolve_model("minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval()
    pool, test, classes = active_learning.pool_and_test("drugs", 5000, 1000, 0)
    assert list(classes) == CLASSES

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
        pool_y=np.array([CLASSES.index(label) for label in pool.label]),
        test_y=np.array([CLASSES.index(label) for label in test.label]),
        pool_text=np.array(pool.text.tolist(), dtype=object),
    )


if not CACHE.exists():
    embeddings()
d = np.load(CACHE, allow_pickle=True)
P, T, py, ty = d["pool"], d["test"], d["pool_y"], d["test_y"]
layer_norm = lambda x: (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)  # noqa: E731
P, T = layer_norm(P), layer_norm(T)
features = selection.text_features(list(d["pool_text"]))
C, weights = float(sys.argv[1]), (None if sys.argv[2] == "none" else "balanced")
selection.RARE_SHARE, random_share = float(sys.argv[3]), float(sys.argv[4])
selection.CANDIDATES_PER_PICK = int(sys.argv[5])
typical = sys.argv[6:] == ["typical"]
if not sys.argv[6:]:  # the least certain from the first round: as the loop picked before 2026-12-06
    selection.UNCERTAIN_FROM = 0


def fit(indices):
    indices = np.array(indices)
    keep = indices[np.arange(len(indices)) % 10 != 0]
    if len(set(py[keep])) < 3:
        keep = indices
    return LogisticRegression(C=C, max_iter=5000, class_weight=weights).fit(P[keep], py[keep])


def scores(model):
    predicted = model.predict(T)
    return f1_score(ty, predicted, average="macro"), (predicted == ty).mean()


def run_random(seed):
    return scores(fit(np.random.default_rng(seed + 100).permutation(len(P))[:150]))


def run_active(seed):
    rng, labelled, model = np.random.default_rng(seed), [], None
    while len(labelled) < 150:
        rest = np.setdiff1d(np.arange(len(P)), labelled)
        probs = model.predict_proba(P[rest]) if model is not None else None
        counts = np.bincount(py[labelled], minlength=3) if labelled else None
        seed_of_round = int(rng.integers(1e9))
        picks = selection.pick(
            30,
            features[rest],
            probs,
            counts,
            CLASSES,
            seed=seed_of_round,
            random_share=random_share,
            embeddings=P[rest] if typical else None,
        )
        labelled += [int(rest[p.position]) for p in picks]
        model = fit(labelled)
    return (*scores(model), np.bincount(py[labelled], minlength=3))


random, active = [run_random(s) for s in range(10)], [run_active(s) for s in range(10)]
gain = [a[0] - r[0] for a, r in zip(active, random)]
print(
    sys.argv[1:],
    f"random macro F1 {np.mean([r[0] for r in random]):.3f} accuracy {np.mean([r[1] for r in random]):.3f} | "
    f"active macro F1 {np.mean([a[0] for a in active]):.3f} accuracy {np.mean([a[1] for a in active]):.3f} | "
    f"active - random {np.mean(gain):+.3f} ± {np.std(gain):.3f} | active labels per class "
    f"{np.mean([a[2] for a in active], axis=0).round(1).tolist()}",
    flush=True,
)
