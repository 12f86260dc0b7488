"""The artifacts a GPU run carries (at most 64 MiB a run): MiniLM in fp16 and IMDB in xz built here, larger models
packed in parts that travel one per run and are joined and checked there."""

from __future__ import annotations

import json
import lzma
import shutil
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
sys.path.insert(0, str(SRC))

from critic.data import catalogue, sources  # noqa: E402

MODEL_DIR = "minilm-fp16"


DATA_FILE = "IMDB_Dataset.csv.xz"


PARTS_FILE = "parts.json"


PART_MIB = 56  # with parts.json and the code, under the 64 MiB a run may carry


def build(out: Path, model: str = "minilm", dataset: str = "imdb", log=print) -> dict:
    """The suite's luggage: the encoder's weights in fp16 (training loads them back in fp32) and the reviews in xz."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / MODEL_DIR
    fp16_encoder(catalogue.resolve_model(model, log=log), target)
    csv = (
        Path(dataset)
        if Path(dataset).is_file()
        else sources.fetch(catalogue.DATASETS[dataset], log=log).path / catalogue.IMDB_CSV
    )
    with open(csv, "rb") as raw, lzma.open(out / DATA_FILE, "wb", preset=9) as packed:
        shutil.copyfileobj(raw, packed, 1 << 20)
    sizes = {p.name: p.stat().st_size for p in [*target.iterdir(), out / DATA_FILE]}
    total = sum(sizes.values())
    log(f"{out}: {total / 2**20:.1f} MiB ({', '.join(f'{k} {v / 2**20:.1f}' for k, v in sizes.items())})")
    return {"folder": str(out), "mib": round(total / 2**20, 1)}


def fp16_encoder(source: Path, target: Path) -> None:
    """An encoder folder with its weights in fp16: half the bytes to carry; training loads them back in fp32."""
    from safetensors.torch import load_file, save_file

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    weights = load_file(source / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, target / "model.safetensors")


def pack(model: str, out: Path, part_mib: float = PART_MIB, log=print) -> dict:
    """An encoder too large for one run's luggage (MPNet in fp16 is 210 MiB; a run carries at most 64 MiB): its
    fp16 folder as one tar cut into parts of at most `part_mib`, with their sha256 in parts.json. Each part travels
    with one run; the GPU machine keeps them between runs while it stays in use, and `join` rebuilds the folder."""
    import hashlib
    import tarfile

    source = catalogue.resolve_model(model, log=log)
    name = f"{Path(model).name}-fp16"
    shutil.rmtree(out, ignore_errors=True)
    staging = out / "staging"
    fp16_encoder(source, staging / name)
    whole = staging / "encoder.tar"
    with tarfile.open(whole, "w") as tar:
        tar.add(staging / name, arcname=name)
    size, parts, digest = int(part_mib * 2**20), [], hashlib.sha256()
    with open(whole, "rb") as stream:
        while chunk := stream.read(size):
            digest.update(chunk)
            part = out / f"part-{len(parts) + 1:03d}"
            part.write_bytes(chunk)
            parts.append({"name": part.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    shutil.rmtree(staging)
    manifest = {"folder": name, "sha256": digest.hexdigest(), "parts": parts}
    (out / PARTS_FILE).write_text(json.dumps(manifest, indent=1))
    log(
        f"{out}: {name} in {len(parts)} parts of at most {part_mib:g} MiB "
        f"({sum(p['bytes'] for p in parts) / 2**20:.1f} MiB); carry {PARTS_FILE} and one part per run"
    )
    return manifest


def join(folder: Path, log=print) -> Path:
    """The encoder folder rebuilt from the parts `pack` wrote, each checked by its sha256; an error names the parts
    that have not arrived or do not match. Joined once: a second call returns the folder."""
    import hashlib
    import tarfile

    manifest = json.loads((folder / PARTS_FILE).read_text())
    target = folder / manifest["folder"]
    if (target / "model.safetensors").is_file():
        return target
    missing = [p["name"] for p in manifest["parts"] if not (folder / p["name"]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: {', '.join(missing)} of {len(manifest['parts'])} parts not here yet; "
            f"carry them (one per run) before joining"
        )
    digest = hashlib.sha256()
    whole = folder / "encoder.tar"
    with open(whole, "wb") as stream:
        for part in manifest["parts"]:
            chunk = (folder / part["name"]).read_bytes()
            if hashlib.sha256(chunk).hexdigest() != part["sha256"]:
                raise ValueError(f"{folder / part['name']}: sha256 differs from {PARTS_FILE}; carry it again")
            digest.update(chunk)
            stream.write(chunk)
    if digest.hexdigest() != manifest["sha256"]:
        raise ValueError(f"{folder}: the joined parts' sha256 differs from {PARTS_FILE}")
    with tarfile.open(whole) as tar:
        tar.extractall(folder, filter="data")
    whole.unlink()
    log(f"{target}: joined from {len(manifest['parts'])} parts")
    return target


def unpack(artifacts: Path, work: Path, smoke: bool) -> str:
    """Put the reviews where critic finds them: the verified IMDB in the suite's own cache, or (smoke) a file."""
    csv = work / catalogue.IMDB_CSV
    with lzma.open(artifacts / DATA_FILE, "rb") as packed, open(csv, "wb") as raw:
        shutil.copyfileobj(packed, raw, 1 << 20)
    if smoke:
        return str(csv)
    sources.fetch(catalogue.IMDB, local=csv)  # sha256-checked; raises on any other file
    return "imdb"
