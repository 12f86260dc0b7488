"""A MiniLM training step (8 reviews of 128 tokens, fp32, AdamW) with each attention, interleaved over 4 rounds of 5
steps, the first round dropped; output in attention-train-step.txt."""

import statistics
import time

import torch
from transformers import AutoModelForSequenceClassification

from critic.data import catalogue
from critic.modeling.attention import use_rowwise_attention

torch.manual_seed(0)
path = catalogue.resolve_model("minilm")
ids = torch.randint(1000, 20000, (8, 128))
mask = torch.ones_like(ids)
labels = torch.randint(0, 2, (8,))
models = {}
for way in ("sdpa", "eager", "rowwise"):
    m = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2).train()
    if way == "rowwise":
        use_rowwise_attention(m)
    else:
        m.set_attn_implementation(way)
    models[way] = (m, torch.optim.AdamW(m.parameters(), lr=1e-5))
times = {w: [] for w in models}
for _round in range(4):
    for way, (m, opt) in models.items():
        t = time.perf_counter()
        for _ in range(5):
            out = m(input_ids=ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
        times[way].append((time.perf_counter() - t) / 5)
for w, v in times.items():
    print(w, "median s/step", round(statistics.median(v[1:]), 3), [round(x, 3) for x in v])
print(torch.get_num_threads())
