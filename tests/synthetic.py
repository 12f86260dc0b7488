"""A learnable toy sentiment dataset in the tiny vocabulary: positive and negative words mixed with filler."""

import random

import pandas as pd

POSITIVE = ["great", "good", "wonderful", "loved", "brilliant", "best", "superb", "fun"]
NEGATIVE = ["bad", "awful", "terrible", "hated", "boring", "worst", "dull", "mess"]
FILLER = ["the", "a", "film", "movie", "was", "is", "it", "plot", "acting", "and", "this", "story", "very", "i"]


def reviews(n: int, seed: int = 0, min_words: int = 4, max_words: int = 30) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(min_words, max_words))]
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append((" ".join(words) + f" {i}", label))  # the number keeps texts unique
    return pd.DataFrame(rows, columns=["text", "label"])


STAR_WORDS = {
    1: ["worst", "terrible", "hated"],
    2: ["bad", "dull", "boring"],
    3: ["ever", "not", "!"],
    4: ["good", "fun", "loved"],
    5: ["best", "superb", "brilliant"],
}


def stars(n: int, seed: int = 0, shares: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)) -> pd.DataFrame:
    """Star-rated toy reviews (1-5, as integers): each star has its own words; `shares` sets the balance."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        star = rng.choices(range(1, 6), weights=shares)[0]
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 20))]
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(STAR_WORDS[star]))
        rows.append((" ".join(words) + f" {i}", star))
    return pd.DataFrame(rows, columns=["review", "stars"])
