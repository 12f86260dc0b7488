"""The cache of active-learning-stratified-replay.py for another of bench/active_learning.py's IMDB pools: MiniLM's
mean embedding of the first 256 tokens (fp32) of its 5,000 pool and 1,000 test reviews.

    python active-learning-embed-pool.py SEED        (writes /tmp/alsim-seedSEED.npz)
"""

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
from transformers import AutoModel, AutoTokenizer
import active_learning
from critic.data import catalogue
seed = int(sys.argv[1])
path = catalogue.resolve_model("minilm")
tokenizer, model = AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval()
pool, test, _ = active_learning.pool_and_test("imdb", 5000, 1000, seed)
def mean(texts):
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            batch = tokenizer(texts[start:start+32], truncation=True, max_length=256, padding=True, return_tensors="pt")
            hidden, mask = model(**batch).last_hidden_state.float(), batch["attention_mask"].unsqueeze(-1).float()
            rows.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(rows)
np.savez(f"/tmp/alsim-seed{seed}.npz", pool=mean(pool.text.tolist()), test=mean(test.text.tolist()),
         pool_y=(pool.label == "positive").values, test_y=(test.label == "positive").values,
         pool_text=np.array(pool.text.tolist(), dtype=object))
print("done", seed)
