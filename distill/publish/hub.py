"""The Hub push: stages `publish/hub/<kind>/` (model, adapter, dataset) exactly as each repo
will receive it, writes `publish/hub/plan.json`, and, when asked, uploads every folder in one
commit with `HfApi.upload_folder`.

A dry run stops after staging, so what it shows is what a push sends, file for file: the push
uploads these same folders and nothing else. That is also why the traces are not sent with
`datasets.Dataset.push_to_hub`: it builds its shards and card during the upload, so no dry run
could show them. The dataset folder is written in push_to_hub's layout instead (parquet shards
`data/train-0000i-of-0000n.parquet` written by `datasets`, `configs` in the card), and loads on
the Hub and with `load_dataset(repo)` the same way.

Weights are hard-linked into the staged folder (copied across file systems), so staging a 15 GB
model costs no space; a later training run rewrites them, and the next publish stages again.
The token is read from the environment variable `publish.token_env` and handed to HfApi in
memory; it is not logged and never written anywhere.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from distill.config import Recipe, dump_recipe
from distill.errors import InputError
from distill.records import RunDir, write_json, write_text

SHARD_BYTES = 500 * 2**20  # push_to_hub's default max_shard_size
SKIP = {"training_args.bin"}  # a pickle: nothing a user should have to unpickle to load a model


def _link_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        if path.is_dir() or path.name in SKIP or path.name.startswith("."):
            continue
        _link(path, dst / path.relative_to(src))


def _link(path: Path, target: Path) -> None:
    """A hard link (no copy of gigabytes of weights), or a copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)


def _kept_rows(run_dir: Path):
    """The kept traces as dataset rows: the chat from the dataset stage, the teacher and the
    gold answer or tests from the generation record."""
    rd = RunDir(run_dir)
    dataset = rd.dataset
    kept = {r["id"] for r in dataset.read()}
    gold = {}
    for g in rd.generate.read():
        if g["id"] in kept:
            gold[g["id"]] = (g.get("teacher"), g.get("answer"), g.get("tests"))
    for r in dataset.read():
        teacher, answer, tests = gold.get(r["id"], (None, None, None))
        yield {"id": r["id"], "prompt_id": r.get("prompt_id"), "source": r.get("source"),
               "category": r.get("category"),
               "messages": [{"role": m["role"], "content": m.get("content") or ""}
                            for m in r["messages"]],
               "teacher": teacher, "answer": answer, "tests": tests}


def _write_dataset(run_dir: Path, folder: Path) -> int:
    import datasets
    from datasets import Features, List, Value

    s = Value("string")
    features = Features({"id": s, "prompt_id": s, "source": s, "category": s,
                         "messages": List({"role": s, "content": s}), "teacher": s,
                         "answer": s, "tests": s})
    cache = folder.parent / ".cache"
    ds = datasets.Dataset.from_generator(_kept_rows, gen_kwargs={"run_dir": run_dir},
                                         features=features, cache_dir=str(cache))
    shards = max(1, math.ceil(ds.data.nbytes / SHARD_BYTES))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        ds.shard(shards, i, contiguous=True).to_parquet(
            str(folder / "data" / f"train-{i:05d}-of-{shards:05d}.parquet"))
    rows = len(ds)
    del ds
    shutil.rmtree(cache, ignore_errors=True)
    return rows


def plan_repos(cfg: Recipe, run_dir: Path) -> dict[str, dict]:
    """kind -> {repo_id, repo_type}: the repos this run publishes to."""
    from distill.publish.card import dataset_repo, gguf_repo, model_name
    p = cfg.publish
    if p.push and not p.hub_repo:
        raise InputError("publish.push needs publish.hub_repo (the model repo, e.g. org/name)",
                         key="publish.hub_repo")
    if p.adapter_repo and cfg.train.adapter == "none":
        raise InputError("publish.adapter_repo is set but train.adapter is none: there is no "
                         "adapter to push", key="publish.adapter_repo")
    repos = {}
    if RunDir(run_dir).dataset.is_complete():
        repos["dataset"] = {"repo_id": dataset_repo(cfg) or f"{cfg.run.name}-traces",
                            "repo_type": "dataset"}
    if p.adapter_repo:
        repos["adapter"] = {"repo_id": p.adapter_repo, "repo_type": "model"}
    repos["model"] = {"repo_id": model_name(cfg), "repo_type": "model"}
    if cfg.quantize.gguf_repo == "separate" and _gguf_files(run_dir):
        repos["gguf"] = {"repo_id": gguf_repo(cfg), "repo_type": "model"}
    return repos


def _gguf_files(run_dir: Path) -> list[Path]:
    """The quantize stage's GGUF files, named `<model>-Q4_K_M.gguf` as the ecosystem names them."""
    from distill.publish.edge import variants
    stage = RunDir(run_dir).quantize
    return [stage.path / v["file"] for v in variants(run_dir) if v["format"] == "gguf"]


def stage_folders(cfg: Recipe, run_dir: Path, cards: dict[str, Path]) -> dict[str, dict]:
    """Builds publish/hub/<kind>/ for every repo of `plan_repos` and returns the plan with each
    folder's files. `cards` maps kind -> the card file that becomes its README.md."""
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    repos = plan_repos(cfg, run_dir)
    root = rd.publish.path / "hub"
    shutil.rmtree(root, ignore_errors=True)  # a staged folder holds exactly one publish
    for kind, repo in repos.items():
        folder = root / kind
        folder.mkdir(parents=True)
        if kind == "dataset":
            repo["rows"] = _write_dataset(run_dir, folder)
        elif kind == "gguf":
            for f in _gguf_files(run_dir):
                _link(f, folder / f.name)
        else:
            weights = rd.train.path / ("adapter" if kind == "adapter" else "model")
            if not (weights / "config.json").exists() and not (weights / "adapter_config.json").exists():
                raise InputError("no trained weights to publish (run `distill train` first)",
                                 file=str(weights))
            _link_tree(weights, folder)
            write_text(folder / "distill_recipe.yaml", dump_recipe(cfg))
            lineage = rd.train.path / "lineage.json"
            if lineage.exists():
                shutil.copy2(lineage, folder / "distill_lineage.json")
            if kind == "model" and "gguf" not in repos:   # quantize.gguf_repo: model
                for f in _gguf_files(run_dir):
                    _link(f, folder / f.name)
        shutil.copy2(cards[kind], folder / "README.md")
        repo.update(folder=str(folder), private=cfg.publish.private,
                    files=sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))
    write_json(root / "plan.json", repos)
    return repos


def hub_token(cfg: Recipe) -> str:
    """The token from the environment variable the recipe names; asked for before anything is
    staged, so a missing token costs nothing."""
    env = cfg.publish.token_env
    token = os.environ.get(env)
    if not token:
        raise InputError(f"environment variable {env} is not set: pushing needs a Hub token with "
                         "write access (the token is read from the environment only)",
                         key="publish.token_env")
    return token


def push_folders(cfg: Recipe, repos: dict[str, dict], token: str) -> dict[str, str]:
    """Uploads each staged folder in one commit (dataset first: the model card links it) and
    returns kind -> commit URL. Remote files that are not in the folder are deleted, so a
    re-push after a refresh leaves no stale shard behind."""
    from huggingface_hub import HfApi

    if cfg.run.rehearsal:  # the publish stage refuses first; this guards every other caller
        raise InputError("a rehearsal is never pushed to the Hub", key="publish.push")
    api = HfApi(token=token)
    urls: dict[str, str] = {}
    for kind in ("dataset", "adapter", "model", "gguf"):
        if kind not in repos:
            continue
        repo = repos[kind]
        api.create_repo(repo["repo_id"], repo_type=repo["repo_type"],
                        private=cfg.publish.private, exist_ok=True)
        info = api.upload_folder(repo_id=repo["repo_id"], repo_type=repo["repo_type"],
                                 folder_path=repo["folder"], delete_patterns=["*"],
                                 commit_message=f"distill {cfg.run.name}: {kind}")
        urls[kind] = info.commit_url
    return urls
