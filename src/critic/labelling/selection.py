"""What to label next: batch-mode active learning over the unlabelled pool.

A batch mixes five kinds of picks, each with the reason the page shows:
- `uncertain`: the smallest margins between the model's two likeliest classes, one per cluster of the candidates,
  so that a batch is not ten near-duplicates of one hard review; once every class has UNCERTAIN_FROM labels
  (`uncertain_pays`);
- `uncertain and typical`: before that, where the model's embeddings of the pool are given, the least certain
  weighed by how typical a review is of the pool (information density), spread over clusters the same way; without
  embeddings, uniform picks;
- `rare class`: the likeliest members of a class with fewer than half the labels of the commonest;
- `random`: a uniform share of the pool, whose labels measure the model's accuracy without bias (the others are
  chosen because the model finds them hard);
- `diverse start`: without a model, the review nearest the centre of each cluster of the pool.

The space the clusters are drawn in is TF-IDF reduced to DIMENSIONS by a truncated SVD: it needs no model (the
cold start and every later round use the same one) and costs about 2 s for 10,000 IMDB reviews on 2 CPU cores,
where the model's own embeddings would cost a second pass of the encoder over the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DIMENSIONS = 64
RANDOM_SHARE = 0.1  # of each batch, drawn uniformly: the accuracy estimate's sample
RARE_SHARE = 0.2  # of each batch's model-chosen picks, for the classes with few labels
CANDIDATES_PER_PICK = 10  # the uncertain candidates clustered per pick
TYPICAL_NEIGHBOURS = 20  # a review's typicality: its mean cosine similarity to this many nearest pool reviews
# Labels in the rarest class below which the least certain reviews teach less than uniform ones. IMDB, a pool of
# 5,000, 1,000 test reviews, `critic train`'s few-label model (2 AMD EPYC Zen 4 cores, 2026-12-06; docs/benchmarks.md,
# active learning): against uniform picks, -4.1 points at 100 labels and -0.5 at 200 with the encoder tuned on pairs
# (seed 0), +0.9 +- 4.6 and +0.4 +- 0.5 with it frozen (3 seeds), and behind at 100, 200 and 400 labels in every
# replay of the loop's frozen model (margins alone, or spread over clusters of TF-IDF or of the embedding). Below it
# the few-label path learns (few_labels.FEW_LABELS_PER_CLASS, the same 200). Weighing the uncertainty by typicality
# (`typical_and_uncertain`) does pay there: that learner replayed on 3 pools, 20 seeds of picks each (`pick` on a
# 1,000-review sample as the loop calls it, rounds of 30-50; 2026-12-07), +1.3 to +2.3 points against uniform picks
# at 100 labels, +0.5 to +1.1 at 200, +0.7 to +1.0 at 400; on drugs' macro F1 at 150, level (+0.005).
UNCERTAIN_FROM = 200


@dataclass(frozen=True)
class Pick:
    position: int  # in the pool as given
    reason: str  # uncertain, rare class <name>, random, diverse start


def text_features(texts: Sequence[str], seed: int = 0) -> np.ndarray:
    """Each text as a unit vector of DIMENSIONS (TF-IDF, then a truncated SVD)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2 if len(texts) >= 50 else 1, max_features=50_000)
    matrix = tfidf.fit_transform(texts)
    dimensions = min(DIMENSIONS, matrix.shape[1] - 1, len(texts) - 1)
    if dimensions < 1:
        return np.zeros((len(texts), 1), dtype=np.float32)
    reduced = TruncatedSVD(dimensions, random_state=seed).fit_transform(matrix)
    return normalize(reduced).astype(np.float32)


def pick(
    count: int,
    features: np.ndarray,
    probs: np.ndarray | None = None,
    labelled_per_class: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    random_share: float = RANDOM_SHARE,
    embeddings: np.ndarray | None = None,
) -> list[Pick]:
    """`count` reviews of the pool to label next (fewer when the pool is smaller). `features`: the pool's
    `text_features`; `probs`: the current model's probabilities for the pool (None: no model yet). Until the least
    certain pay (`uncertain_pays`), their places go to the least certain weighed by typicality in `embeddings` (the
    model's, one row per pool review), or to uniform picks without them."""
    rng = np.random.default_rng(seed)
    count = min(count, len(features))
    randoms = int(round(count * random_share)) if count >= 1 / max(random_share, 1e-9) else 0
    batch = Batch(len(features))
    if probs is None:
        batch.take(central(features, count - randoms, rng), "diverse start", count - randoms)
    else:
        # rare_picks asks for one review or more of each rare class, which can be more than a small batch holds
        for reason, positions in rare_picks(probs, labelled_per_class, class_names, count - randoms):
            batch.take(positions, reason, count - randoms)
        left = count - randoms - len(batch.taken)
        if uncertain_pays(labelled_per_class):
            batch.take(least_certain(probs, features, batch.chosen, left, rng), "uncertain", count - randoms)
        elif embeddings is not None:
            picked = typical_and_uncertain(probs, embeddings, batch.chosen, left, rng)
            batch.take(picked, "uncertain and typical", count - randoms)
    rest = np.flatnonzero(~batch.chosen)
    batch.take(rng.choice(rest, size=min(count - len(batch.taken), len(rest)), replace=False), "random", count)
    return batch.taken


class Batch:
    """The picks so far, and which of the pool's positions they hold."""

    def __init__(self, pool_size: int):
        self.taken: list[Pick] = []
        self.chosen = np.zeros(pool_size, dtype=bool)

    def take(self, positions, reason: str, up_to: int) -> None:
        """Each of `positions` not taken yet, for `reason`, until the batch holds `up_to` picks."""
        for position in positions:
            if len(self.taken) < up_to and not self.chosen[position]:
                self.chosen[position] = True
                self.taken.append(Pick(int(position), reason))


def central(features: np.ndarray, count: int, rng: np.random.Generator, sample: int = 5000) -> np.ndarray:
    """The review nearest the centre of each of `count` clusters (of a sample of the pool, for speed)."""
    if count <= 0:
        return np.array([], dtype=int)
    positions = rng.choice(len(features), size=min(sample, len(features)), replace=False)
    return nearest_centres(features, positions, count, rng)


def nearest_centres(features: np.ndarray, positions: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.cluster import KMeans

    if count >= len(positions):
        return positions
    points = features[positions]
    kmeans = KMeans(count, n_init=1, random_state=int(rng.integers(2**31))).fit(points)
    distances = np.linalg.norm(points - kmeans.cluster_centers_[kmeans.labels_], axis=1)
    nearest = {}
    for row, (cluster, distance) in enumerate(zip(kmeans.labels_, distances)):
        if cluster not in nearest or distance < distances[nearest[cluster]]:
            nearest[cluster] = row
    return positions[sorted(nearest.values())]


def uncertain_pays(labelled_per_class: Sequence[int] | None) -> bool:
    """Whether the least certain reviews are worth asking for yet: UNCERTAIN_FROM labels in every class."""
    return labelled_per_class is not None and len(labelled_per_class) > 0 and min(labelled_per_class) >= UNCERTAIN_FROM


def least_certain(
    probs: np.ndarray, features: np.ndarray, chosen: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """The smallest margins, spread over `count` clusters of `features` (`spread`)."""
    return spread(margin(probs), features, chosen, count, rng)


def typical_and_uncertain(
    probs: np.ndarray, embeddings: np.ndarray, chosen: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Information density (Settles and Craven, 2008): a review's uncertainty (1 - margin) times its typicality in
    the model's `embeddings`, spread over `count` clusters of them. The least certain alone are often reviews whose
    embedding says little about their sentiment; the typical among them teach the model more."""
    unit = embeddings - embeddings.mean(1, keepdims=True)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    return spread(-(1 - margin(probs)) * np.maximum(typicality(unit), 0), unit, chosen, count, rng)


def typicality(unit: np.ndarray) -> np.ndarray:
    """Each row's mean cosine similarity to its TYPICAL_NEIGHBOURS nearest other rows."""
    neighbours = min(TYPICAL_NEIGHBOURS, len(unit) - 1)
    if neighbours < 1:
        return np.ones(len(unit))
    found = np.empty(len(unit))
    for start in range(0, len(unit), 1000):  # 1,000 rows at a time: a large pool sample's square would not fit
        similarity = unit[start : start + 1000] @ unit.T
        rows = np.arange(len(similarity))
        similarity[rows, rows + start] = -np.inf
        found[start : start + 1000] = np.partition(similarity, -neighbours, axis=1)[:, -neighbours:].mean(1)
    return found


def spread(
    scores: np.ndarray, space: np.ndarray, chosen: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """The CANDIDATES_PER_PICK × `count` lowest `scores` not `chosen` clustered into `count` groups of `space`, and
    the lowest of each, lowest first: so that a batch is not ten near-duplicates of one review."""
    from sklearn.cluster import KMeans

    if count <= 0:
        return np.array([], dtype=int)
    scores = np.where(chosen, np.inf, scores.astype(np.float64))
    candidates = np.argsort(scores, kind="stable")[: min(CANDIDATES_PER_PICK * count, int((~chosen).sum()))]
    if count >= len(candidates):
        return candidates
    groups = KMeans(count, n_init=1, random_state=int(rng.integers(2**31))).fit_predict(space[candidates])
    best = {}
    for candidate, group in zip(candidates, groups):  # candidates come lowest first
        best.setdefault(group, candidate)
    return np.array(sorted(best.values(), key=lambda position: scores[position]))


def margin(probs: np.ndarray) -> np.ndarray:
    """The likeliest class's probability minus the second's: small is uncertain."""
    top = np.sort(probs, axis=1)
    return (top[:, -1] - top[:, -2]).astype(np.float64)


def rare_picks(
    probs: np.ndarray, labelled_per_class: Sequence[int] | None, class_names: Sequence[str] | None, count: int
) -> list[tuple[str, np.ndarray]]:
    """For each class with fewer than half the labels of the commonest, its likeliest members in the pool:
    RARE_SHARE of `count` shared among those classes."""
    if labelled_per_class is None or len(labelled_per_class) < 2 or count <= 0:
        return []
    counts = np.asarray(labelled_per_class)
    rare = np.flatnonzero(counts < counts.max() / 2)
    if not len(rare):
        return []
    each = max(1, int(round(count * RARE_SHARE / len(rare))))
    names = class_names or [str(c) for c in range(len(counts))]
    return [(f"rare class {names[c]}", np.argsort(-probs[:, c], kind="stable")[:each]) for c in rare]
