"""Inference: the Classifier (predict.py) and the engines it scores with on a CPU, chosen by measurement and tied
to the weights (backends.py, export.py); files scored in a stream (files.py), on a Ray cluster (scale.py); and
explanations (explain.py)."""
