"""Training: one loop (loop.py) and the jobs it runs — fine-tuning and distillation (train.py, distill.py),
masked-language-model pre-training (pretrain.py) — and the hyper-parameter search that drives it (tune.py)."""
