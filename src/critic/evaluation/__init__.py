"""The evaluation stage: the metrics from a model's probabilities (metrics.py: `measure`), their terminal and HTML
forms (rendering.py), and the evaluation run (run.py: `evaluate_model`, the `critic evaluate` verb)."""
