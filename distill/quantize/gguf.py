"""GGUF export: llama.cpp's converter writes the distilled student at 16 bits (distill/quantize/
convert.py), llama.cpp's quantizer (`llama_model_quantize`, what the `llama-quantize` tool runs)
writes each quantization type from it. The path users take to llama.cpp, Ollama and LM Studio.

One change on the way in: the chat template loses transformers' `{% generation %}` markers
(they tell TRL which tokens are the assistant's and render nothing), because llama.cpp's and
Ollama's template engines do not know the tag. distill/quantize/checks.py then renders the
template the file holds and the model's own on the same conversation and requires the same text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from distill.errors import InputError

log = logging.getLogger(__name__)

GENERATION_TAG = re.compile(r"{%-?\s*(end)?generation\s*-?%}")
# llama.cpp's llama_ftype per type name (llama.h).
FTYPES = {"f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "bf16": 32}


def gguf_name(stem: str, qtype: str) -> str:
    """The file name the ecosystem uses: `<model>-Q4_K_M.gguf`."""
    return f"{stem}-{qtype.upper()}.gguf"


def without_generation_tags(template: str) -> str:
    return GENERATION_TAG.sub("", template)


def _staged(model_dir: Path, staging: Path) -> Path:
    """model_dir as the converter reads it: the weights linked, the tokenizer files copied with
    the chat template's generation markers removed."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name not in ("chat_template.jinja", "tokenizer_config.json"):
            (staging / f.name).symlink_to(f.resolve())
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        (staging / jinja.name).write_text(without_generation_tags(jinja.read_text()))
    tc = model_dir / "tokenizer_config.json"
    if tc.is_file():
        data = json.loads(tc.read_text())
        if isinstance(data.get("chat_template"), str):
            data["chat_template"] = without_generation_tags(data["chat_template"])
        (staging / tc.name).write_text(json.dumps(data, indent=2))
    return staging


def convert(model_dir: Path, out: Path, log_path: Path, name: str | None = None) -> float:
    """model_dir -> `out` at 16 bits (bf16 weights stay bf16, others f16) with llama.cpp's
    converter, in a child process; returns its seconds. A failure names the log's tail. `name`
    is the file's general.name (what LM Studio and Ollama show), the model folder's by default."""
    from distill.quantize.convert import converter_dir
    where = converter_dir()
    name = name or model_dir.resolve().name
    # The converter names the model after its folder too (general.basename, finetune, size):
    # the staged copy's folder has the model's name.
    staging = _staged(model_dir, out.parent / ".staging" / name)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [sys.executable, "-m", "distill.quantize.convert", str(where), str(staging),
           "--outfile", str(tmp), "--outtype", "auto", "--model-name", name]
    start = time.monotonic()
    with open(log_path, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    shutil.rmtree(staging.parent, ignore_errors=True)
    if rc != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        raise InputError(f"llama.cpp's converter could not convert {model_dir} (exit {rc}); "
                         f"log {log_path}:\n{tail}")
    os.replace(tmp, out)
    return time.monotonic() - start


@contextlib.contextmanager
def _c_output_to(log_path: Path) -> Iterator[None]:
    """llama.cpp's own stdout and stderr (a line per tensor) appended to log_path meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def quantize(base: Path, out: Path, qtype: str, threads: int | None = None) -> float:
    """llama.cpp's quantizer: `base` (16-bit GGUF) -> `out` as `qtype`; returns its seconds.
    Tensors whose rows do not divide into a type's blocks (a k-quant needs 256 columns) take
    llama.cpp's own fallback type, as `llama-quantize` does."""
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads or len(os.sched_getaffinity(0))
    tmp = out.with_name(out.name + ".tmp")
    start = time.monotonic()
    with _c_output_to(out.parent / "quantize.log"):
        rc = llama_cpp.llama_model_quantize(str(base).encode(), str(tmp).encode(), params)
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp's quantizer failed on {base} -> {qtype} (code {rc})")
    os.replace(tmp, out)
    return time.monotonic() - start


def export(model_dir: Path, out_dir: Path, stem: str, qtypes: Sequence[str],
           threads: int | None = None) -> list[dict]:
    """The GGUF files of model_dir, one per qtype, in out_dir: `{"qtype", "path", "bytes",
    "export_s"}` each. The 16-bit conversion is kept only when asked for (as f16/bf16)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((model_dir / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype")
    base_type = "bf16" if dtype == "bfloat16" else "f16"
    # Not asked for, the 16-bit file is an intermediate under a name of its own: a 16-bit
    # variant kept from an earlier run (same name) is neither overwritten nor deleted.
    base = out_dir / gguf_name(stem, base_type)
    if base_type not in qtypes:
        base = base.with_name("." + base.name + ".intermediate")
    convert_s = convert(model_dir, base, out_dir / "convert.log", stem)
    log.info("quantize: converted %s to %s in %.1f s", model_dir, base.name, convert_s)
    done = []
    try:
        for qtype in qtypes:
            path = out_dir / gguf_name(stem, qtype)
            seconds = convert_s if qtype == base_type else convert_s + quantize(base, path, qtype, threads)
            done.append({"qtype": qtype, "path": path, "bytes": path.stat().st_size,
                         "export_s": round(seconds, 2)})
            log.info("quantize: %s %.1f MB in %.1f s", path.name, path.stat().st_size / 1e6, seconds)
    finally:
        if base_type not in qtypes:
            base.unlink(missing_ok=True)
    return done
