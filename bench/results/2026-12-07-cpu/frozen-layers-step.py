"""A MiniLM training step (8 reviews of 128 tokens, fp32, AdamW, the row-wise attention) with parts kept as pretrained,
interleaved over 4 rounds of 5 steps, the first round dropped; output in frozen-layers-step.txt."""

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
for way in ("all", "frozen_emb", "frozen_emb_2layers", "frozen_emb_3layers"):
    m = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2).train()
    use_rowwise_attention(m)
    if way != "all":
        m.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    if "layers" in way:
        for layer in m.bert.encoder.layer[: int(way.split("_")[2][0])]:
            layer.requires_grad_(False)
        m.bert.embeddings.requires_grad_(False)
    models[way] = (m, torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5, foreach=True))
times = {w: [] for w in models}
opt_t = {w: [] for w in models}
for _round in range(4):
    for way, (m, opt) in models.items():
        t = time.perf_counter()
        o = 0
        for _ in range(5):
            out = m(input_ids=ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            t1 = time.perf_counter()
            opt.step()
            opt.zero_grad()
            o += time.perf_counter() - t1
        times[way].append((time.perf_counter() - t) / 5)
        opt_t[way].append(o / 5)
for w, v in times.items():
    print(
        w, "median s/step", round(statistics.median(v[1:]), 3), "optimizer", round(statistics.median(opt_t[w][1:]), 3)
    )
