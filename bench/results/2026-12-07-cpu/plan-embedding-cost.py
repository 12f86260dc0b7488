"""What the loop's typical-and-uncertain picks add to a plan: the pool sample's embeddings (a second pass of the
encoder, `LabelSession._embeddings`) against its scoring (`predict_proba`), on 1,000 IMDB training reviews as the
loop loads a model (long reviews cut), 3 interleaved rounds, medians.

    python plan-embedding-cost.py MODEL
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))
from critic import data  # noqa: E402
from critic.inference import monitoring  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402
from critic.labelling.session import POOL_LONG_REVIEWS  # noqa: E402

classifier = Classifier.load(sys.argv[1], long_reviews=POOL_LONG_REVIEWS)
texts = data.load("imdb").split("train").sample(n=1000, random_state=0)["text"].tolist()
seconds = {"predict_proba": [], "embed": []}
for _ in range(3):
    for name, run in (("predict_proba", classifier.predict_proba), ("embed", lambda t: monitoring.embed(classifier, t))):
        started = time.perf_counter()
        run(texts)
        seconds[name].append(time.perf_counter() - started)
print(cpu_name(), time.strftime("%Y-%m-%d"), classifier.backend, {k: [round(s, 1) for s in v] for k, v in seconds.items()})
print({k: round(statistics.median(v), 1) for k, v in seconds.items()})
