"""What the GPU benchmarks share: the artifacts that travel to a card (artifacts.py) and the harness that runs the
steps and writes the report (harness.py). bench/gpu_suite.py and bench/gpu_recipe.py are the scripts that use it."""
