import os
import subprocess
import sys

import pytest
import torch
from transformers import BertConfig, BertModel

from critic.modeling import compile_cache

# A fresh machine, twice: each process has its own empty inductor cache; only critic's cache folder is shared.
COMPILE_ONCE = """
import torch
from torch._dynamo.utils import counters
from transformers import BertConfig, BertModel

from critic.modeling import compile_cache

config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
model = BertModel(config).eval()
kept = compile_cache.cache_file(torch.device("cpu"), model)
compile_cache.load(kept, print)
with torch.no_grad():
    torch.compile(model)(input_ids=torch.ones(2, 8, dtype=torch.long))
compile_cache.save(kept)
print("hits", counters["inductor"]["fxgraph_cache_hit"], "misses", counters["inductor"]["fxgraph_cache_miss"])
"""


def tiny_model() -> BertModel:
    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    return BertModel(config)


def compile_on_a_fresh_machine(tmp_path, name: str) -> str:
    env = {**os.environ, "CRITIC_CACHE": str(tmp_path / "critic"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / name)}
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ONCE], env=env, capture_output=True, text=True, timeout=600, check=True
    )
    return result.stdout


@pytest.mark.slow
def test_a_second_machine_starts_from_what_the_first_compiled(tmp_path):
    first = compile_on_a_fresh_machine(tmp_path, "first")
    assert "hits 0 misses" in first and "from earlier runs" not in first, first
    second = compile_on_a_fresh_machine(tmp_path, "second")
    assert "compiled graph(s) from earlier runs" in second, second
    assert "misses 0" in second and "hits 0 " not in second, second


def test_a_cache_file_that_cannot_be_read_is_reported_and_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path))
    model = tiny_model()
    path = compile_cache.cache_file(torch.device("cpu"), model)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not torch's cache")
    said = []
    compile_cache.load(path, said.append)
    assert len(said) == 1 and said[0].startswith(f"torch.compile: not using {path}") and "from scratch" in said[0]


def test_each_architecture_has_its_own_file(tmp_path, monkeypatch):
    """torch saves what a run used, so a file shared by two architectures would lose one's graphs to the other."""
    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path))
    small, wider = (
        tiny_model(),
        BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)),
    )
    assert compile_cache.cache_file(torch.device("cpu"), small) == compile_cache.cache_file(torch.device("cpu"), small)
    assert compile_cache.cache_file(torch.device("cpu"), small) != compile_cache.cache_file(torch.device("cpu"), wider)
    assert compile_cache.cache_file(torch.device("cpu"), small).parent == tmp_path / "compile"
