"""Step time of MiniLM training (8 x 128 tokens, 2 threads, fp32, the lowest 3 layers + embeddings frozen, rowwise
attention) with and without dropout in places."""
import sys, time, statistics, torch
from transformers import AutoModelForSequenceClassification
from critic.data import catalogue
from critic.modeling.attention import use_rowwise_attention
path = catalogue.resolve_model("minilm")
def build(attn_drop, eval_frozen):
    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attention_probs_dropout_prob=attn_drop)
    use_rowwise_attention(m)
    m.train()
    m.base_model.embeddings.requires_grad_(False)
    for layer in m.base_model.encoder.layer[:3]:
        layer.requires_grad_(False)
    if eval_frozen:
        m.base_model.embeddings.eval()
        for layer in m.base_model.encoder.layer[:3]:
            layer.eval()
    return m
ids = torch.randint(1000, 20000, (8, 128)); mask = torch.ones_like(ids); y = torch.randint(0, 2, (8,))
variants = {"base": (0.1, False), "no_attn_dropout": (0.0, False), "frozen_eval": (0.1, True), "both": (0.0, True)}
models = {k: build(*v) for k, v in variants.items()}
opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in models.items()}
times = {k: [] for k in variants}
for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    for k, m in models.items():
        for i in range(6):
            t = time.perf_counter()
            out = m(input_ids=ids, attention_mask=mask, labels=y)
            out.loss.backward(); opts[k].step(); opts[k].zero_grad()
            if i >= 1: times[k].append(time.perf_counter() - t)
for k, v in times.items():
    print(f"{k:16s} median {statistics.median(v)*1000:.0f} ms/step over {len(v)}")
