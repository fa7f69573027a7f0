"""The quantize stage: reads train/model (the distilled student), writes quantize/ with one file
or folder per variant (GGUF files named as the ecosystem names them, torchao checkpoints),
`<role>.json` per variant (what it is, its checks, size, memory, CPU tokens/s) and
variants.json, the list the evaluate stage serves and scores beside the other models.

Off (quantize.enabled false) it writes an empty list. A variant whose `<role>.json` was written
for the same student and settings is kept on a re-run: nothing is exported twice. The
unquantized student is measured the same way (role `student`), as the row the variants are
compared with.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from distill.config import Recipe
from distill.errors import InputError
from distill.quantize import checks
from distill.records import RunDir, Stage, record_id

log = logging.getLogger(__name__)


def student_name(cfg: Recipe) -> str:
    return cfg.publish.hub_repo or f"{cfg.run.name}-distilled"


def _stem(cfg: Recipe) -> str:
    return student_name(cfg).split("/")[-1]


def _done(stage: Stage, role: str, key: str) -> dict | None:
    path = stage.path / f"{role}.json"
    if not path.exists():
        return None
    entry = stage.read_json(path.name)
    return entry if entry.get("key") == key and (stage.path / entry["file"]).exists() else None


def _prompt_ids(model_dir: Path, probe: list[dict]) -> list[int]:
    from transformers import AutoTokenizer
    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    return tok.apply_chat_template(probe, add_generation_prompt=True, tokenize=True,
                                   return_dict=True)["input_ids"]


def _gguf_variants(cfg: Recipe, stage: Stage, model_dir: Path, source: str, probe: list[dict],
                   ref: checks.Reference, prompt_ids: list[int]) -> list[dict]:
    from distill.quantize import gguf
    from distill.quantize.measure import measure_gguf
    q = cfg.quantize
    keys = {t: record_id("gguf", t, source, q.probe, q.probe_max_tokens) for t in q.gguf}
    kept = {t: _done(stage, f"student-{t}", keys[t]) for t in q.gguf}
    todo = [t for t in q.gguf if kept[t] is None]
    made = {e["qtype"]: e for e in gguf.export(model_dir, stage.path, _stem(cfg), todo, q.threads)} \
        if todo else {}
    out = []
    for t in q.gguf:
        entry = kept[t]
        if entry is not None:
            out.append(entry)
            continue
        e, role = made[t], f"student-{t}"
        seen = checks.check_gguf(e["path"], model_dir, probe, ref, q.probe_max_tokens, q.threads)
        entry = {"role": role, "name": f"{student_name(cfg)}-{t.upper()}", "format": "gguf",
                 "qtype": t, "file": e["path"].name, "bytes": e["bytes"],
                 "export_s": e["export_s"], "checks": seen, "key": keys[t],
                 **measure_gguf(e["path"], prompt_ids, q.bench_tokens, q.threads)}
        stage.write_json(f"{role}.json", entry)
        out.append(entry)
    return out


def _torchao_variants(cfg: Recipe, stage: Stage, model_dir: Path, source: str,
                      probe: list[dict], ref: checks.Reference, prompt_ids: list[int]) -> list[dict]:
    from distill.quantize import torchao
    q, out = cfg.quantize, []
    for scheme in q.torchao:
        role = f"student-{scheme}"
        key = record_id("torchao", scheme, torchao.METHODS[scheme], source, q.probe,
                        q.probe_max_tokens)
        entry = _done(stage, role, key)
        if entry is None:
            folder = stage.path / f"{_stem(cfg)}-{scheme}"
            start = time.monotonic()
            made = torchao.quantize_checkpoint(model_dir, folder, scheme)
            export_s = round(time.monotonic() - start, 2)
            seen = checks.check_checkpoint(folder, model_dir, probe, ref, q.probe_max_tokens)
            entry = {"role": role, "name": f"{student_name(cfg)}-{scheme}", "format": "torchao",
                     "qtype": scheme, "method": torchao.METHODS[scheme],
                     "group_size": made["group_size"], "file": folder.name, "bytes": made["bytes"],
                     "export_s": export_s, "checks": seen, "key": key,
                     **torchao.measure(folder, prompt_ids, q.bench_tokens, q.threads)}
            stage.write_json(f"{role}.json", entry)
        out.append(entry)
    return out


def _unquantized(cfg: Recipe, stage: Stage, model_dir: Path, source: str,
                 prompt_ids: list[int]) -> dict:
    from distill.quantize import torchao
    key = record_id("student", source)
    entry = _done(stage, "student", key)
    if entry is None:
        entry = {"role": "student", "name": student_name(cfg), "format": "safetensors",
                 "qtype": None, "file": "../train/model", "bytes": torchao.weight_bytes(model_dir),
                 "key": key,
                 **torchao.measure(model_dir, prompt_ids, cfg.quantize.bench_tokens,
                                   cfg.quantize.threads)}
        stage.write_json("student.json", entry)
    return entry


def _installed(cfg: Recipe) -> None:
    """What the asked-for formats need, or bad input naming it before anything runs."""
    import importlib.util
    q = cfg.quantize
    for wanted, module, key in ((q.gguf, "llama_cpp", "quantize.gguf"),
                                (q.gguf, "gguf", "quantize.gguf"),
                                (q.torchao, "torchao", "quantize.torchao")):
        if wanted and importlib.util.find_spec(module) is None:
            raise InputError(f"{module} is not installed: install the quantize extra "
                             "(./setup.sh does, or pip install -e '.[quantize]')", key=key)
    if q.gguf:
        from distill.quantize.convert import converter_dir
        converter_dir()


def run_quantize(cfg: Recipe, run_dir: Path) -> Path:
    rd = RunDir(run_dir)
    train = rd.require("train", complete=True)
    stage = rd.quantize
    stage.start()
    stage.mkdir()
    variants: list[dict] = []
    if cfg.quantize.enabled:
        _installed(cfg)
        model_dir = (train.path / "model").resolve()
        source = record_id(train.manifest())
        probe = [{"role": "user", "content": cfg.quantize.probe}]
        prompt_ids = _prompt_ids(model_dir, probe)
        ref = checks.reference(model_dir, probe, cfg.quantize.probe_max_tokens)
        log.info("quantize: the unquantized student %s the probe in %s",
                 "stops on" if ref.stopped else "does not stop on",
                 f"{cfg.quantize.probe_max_tokens} tokens")
        variants.append(_unquantized(cfg, stage, model_dir, source, prompt_ids))
        variants += _gguf_variants(cfg, stage, model_dir, source, probe, ref, prompt_ids)
        variants += _torchao_variants(cfg, stage, model_dir, source, probe, ref, prompt_ids)
    for stale in stage.path.glob("student-*.json"):  # variants no longer asked for
        if stale.stem not in {v["role"] for v in variants}:
            _remove(stage, stage.read_json(stale.name))
            stale.unlink()
    path = stage.write_json("variants.json", variants)
    stage.complete(records=len(variants), variants=[v["role"] for v in variants])
    return path


def _remove(stage: Stage, entry: dict) -> None:
    target = stage.path / entry.get("file", "")
    if target == stage.path:
        return
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
