"""Training: one loop (loop.py, its processes, batches, step and checkpoint beside it) and the jobs it runs —
fine-tuning and distillation (train.py, distill.py), masked-language-model pre-training (pretrain.py) — and the
hyper-parameter search that drives it (tune.py)."""
