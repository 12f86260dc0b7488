"""What the benchmarks share: the artifacts that travel to a card (artifacts.py) and the harness that runs the
steps and writes the report (harness.py), for bench/gpu_suite.py and bench/gpu_recipe.py; a `critic serve` process
(serving.py), for bench/serve_load.py and bench/serve_attack.py."""
