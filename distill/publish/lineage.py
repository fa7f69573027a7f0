"""Lineage of a run: reads the manifests of a run directory, returns what the cards and the
leaderboard say about where a model came from (code version, prompt revisions, teacher cost,
filter counts, training) and how large a model is.

Every reader here tolerates a missing stage (a card of a partial run says less, it does not
fail); parameter counts come from safetensors headers, so no weights are loaded.
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
from functools import lru_cache
from pathlib import Path

from distill.models import resolve_model
from distill.records import RunDir, current_traces

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def code_version() -> str:
    """`distill <version>`, plus the git commit of the checkout it runs from (`+dirty` when
    tracked files differ from it)."""
    try:
        from importlib.metadata import version
        text = f"distill {version('distill')}"
    except Exception:
        text = "distill (not installed)"
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True,
                                   timeout=10).stdout.strip()
            text += f", git {sha.stdout.strip()}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return text


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_lineage(run_dir: Path) -> dict:
    """What the manifests of a run record: prompts per source and their revisions, the
    teacher's tokens and cost, filter counts, the train manifest and lineage."""
    rd = RunDir(run_dir)
    prompts, gen, train = (s.manifest() or {} for s in (rd.prompts, rd.generate, rd.train))
    return {
        "prompts": prompts.get("sources") or {},
        "revisions": prompts.get("revisions") or {},
        "generate": {**{k: gen.get(k) for k in ("samples", "prompts", "teacher", "gen_hash")},
                     **generation_cost(run_dir)} if gen else {},
        "filter_counts": _json(rd.filter.path / "counts.json"),
        "kept": (rd.dataset.manifest() or {}).get("records"),
        "train": train,
        "train_lineage": _json(rd.train.path / "lineage.json") or {},
        "code_version": code_version(),
    }


def generation_cost(run_dir: Path) -> dict:
    """The teacher's bill over every current sample of the generation config the generate
    stage completed (its manifest's `gen_hash`; the manifest's token counts are those of its
    last invocation only): dollars (0 for a self-hosted teacher without prices) and completion
    tokens, each sample's share of its request's usage."""
    gen = RunDir(run_dir).generate.manifest() or {}
    cost, tokens, samples = 0.0, 0.0, 0
    if gen:
        for r in current_traces(run_dir, gen.get("gen_hash") or None):
            usage = r.get("usage") or {}
            cost += float(r.get("cost") or 0.0)
            tokens += float(usage.get("completion_tokens") or 0) / max(1, int(usage.get("choices") or 1))
            samples += 1
    return {"cost": cost, "completion_tokens": int(round(tokens)), "samples": samples}


def _safetensors_params(path: Path) -> int:
    """Parameters in one safetensors file, from its JSON header (8-byte length, then JSON)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for d in info["shape"]:
                n *= d
            total += n
    return total


def count_parameters(model: str | Path | None) -> int | None:
    """Parameters of a local model directory (or a `toy:` name), counted from its safetensors
    headers; None for a Hub id or a folder without safetensors (no download for a count)."""
    if not model:
        return None
    path = Path(resolve_model(str(model), check=False))
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    try:
        return sum(_safetensors_params(f) for f in files)
    except (OSError, ValueError, KeyError, struct.error) as e:
        log.warning("cannot count the parameters of %s: %s", path, e)
        return None


def model_license(model: str | None, revision: str | None = None) -> str | None:
    """The license in a model's card: a local directory's README.md, else the Hub's card (None
    when the Hub cannot be reached or the card names no license)."""
    if not model:
        return None
    from huggingface_hub import HfApi, ModelCard
    name = resolve_model(model, check=False)
    try:
        local = Path(name)
        if local.is_dir():
            readme = local / "README.md"
            return ModelCard.load(readme).data.license if readme.exists() else None
        if "/" not in name:
            return None
        # model_info rather than ModelCard.load: one request, no download retries offline.
        info = HfApi().model_info(name, revision=revision, timeout=10)
        return getattr(info.card_data, "license", None)
    except Exception as e:  # offline, gated or no card: the caller says "not known"
        log.info("no license found for %s: %s", model, str(e).splitlines()[0] if str(e) else e)
        return None
