"""Who answers in the eval stage: reads the recipe and the train stage's manifest, yields
OpenAI-compatible endpoints for the teacher, the base student and the distilled student.

Every model is reached over the chat-completions API with the same client and the same
sampling. A model is either an endpoint already running (an API teacher such as DeepSeek's,
`teacher.base_url`; students served elsewhere, `eval.base_url`) or a local path / Hub id that
this stage serves for as long as it needs it, with the project's server or with `vllm serve`
(`eval.server`; `eval.vllm_executable` names the command, `eval.server_args` adds flags, and the
stage adds the --max-model-len its prompts need: distill/eval/context.py).

Each model also has a `key` that goes into the id of its per-sample records: the same key means
the same weights, so a re-run reuses samples and a different model reuses none. A local
directory is keyed by a fingerprint of its files, so a model re-trained at the same path is a new
model; the distilled student by its train manifest; an API model by its name and revision.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from distill.config import Recipe
from distill.errors import InputError
from distill.records import RunDir, record_id
from distill.serving.llama_cpp import SAMPLE_AS_VLLM

log = logging.getLogger(__name__)

# endpoint(max_model_len) -> (base_url, model, key); max_model_len reaches `vllm serve` only.
Endpoint = Callable[..., ContextManager[tuple[str, str, "str | None"]]]
# Files above this size are fingerprinted by size and modification time instead of content:
# hashing a 14B checkpoint (28 GB) on every eval would cost minutes.
HASH_LIMIT_BYTES = 256 << 20


@dataclass
class EvalModel:
    role: str          # teacher | base | student | student-<quantization> (student-q4_k_m)
    name: str          # what the leaderboard shows
    key: str           # what identifies its weights in record ids
    endpoint: Endpoint
    # vllm | distill | llama.cpp: started by this stage; endpoint: already running
    served: str = "endpoint"
    # what a server started here loads (a directory or a Hub id); for a GGUF file, the
    # student's directory, whose tokenizer counts the prompts
    path: str | None = None
    revision: str | None = None
    max_n_per_request: int | None = None   # samples per request; None: all missing at once
    stop_token_ids: list[int] | None = None  # tokens that end an answer beyond the model's EOS
    # Fields every request to this server carries so that it samples as the others do (a
    # llama.cpp server's own defaults add a repeat penalty); part of the records' ids.
    request_fields: dict[str, Any] = field(default_factory=dict)


def end_of_turn_stops(path: str, revision: str | None = None) -> list[int]:
    """The token a model's chat template ends the assistant's turn with, when its generation
    config does not stop on it: a base Qwen ends turns with <|im_end|> but stops only at
    <|endoftext|>, so served as it is it writes past its turn (the next user turn, more
    answers) until max_tokens. Sent as vLLM's `stop_token_ids`, so it stops as the distilled
    student (whose config stops on it) does. Empty when the model already stops there, or
    when its tokenizer cannot tell."""
    from transformers import AutoTokenizer, GenerationConfig

    from distill.chat import detect_end_of_turn

    try:
        from distill.models import resolve_model as resolve
        tok = AutoTokenizer.from_pretrained(resolve(path), revision=revision)
        eot = detect_end_of_turn(tok) if tok.chat_template else None
    except Exception:  # noqa: BLE001  (offline, no template: the server's own stops apply)
        return []
    if eot is None:
        return []
    try:
        eos: Any = GenerationConfig.from_pretrained(resolve(path), revision=revision or "main").eos_token_id
    except Exception:  # noqa: BLE001  (no generation_config.json)
        eos = tok.eos_token_id
    stops: set[Any] = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    eot_id: Any = tok.convert_tokens_to_ids(eot)
    return [] if eot_id in stops else [eot_id]


def fingerprint(path: Path) -> str:
    """A short hash of a model directory: relative names and contents of its files (size and
    mtime for files above HASH_LIMIT_BYTES)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0".encode())
        if st.st_size > HASH_LIMIT_BYTES:
            h.update(str(st.st_mtime_ns).encode())
            continue
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def weights_key(model: str, revision: str | None) -> str:
    """What makes two evaluations of `model` the same model (see the module docstring)."""
    from distill.models import is_toy, toy_version
    if is_toy(model):
        return f"{model}@{toy_version(model)}"
    path = Path(model)
    if path.is_dir():
        return f"local@{fingerprint(path)}"
    return f"{model}@{revision or ''}"


def vllm_command(executable: str, model: str, port: int, *, revision: str | None = None,
                 max_model_len: int | None = None,
                 extra_args: list[str] | None = None) -> list[str]:
    """`vllm serve MODEL` on 127.0.0.1:PORT as the served name `model`. `executable` is split
    like shell words ("vllm", "/opt/vllm-env/bin/vllm", "python -m vllm.entrypoints.cli.main")."""
    from distill.models import resolve_model as resolve

    cmd = shlex.split(executable) + ["serve", resolve(model), "--host", "127.0.0.1",
                                     "--port", str(port), "--served-model-name", model]
    if max_model_len is not None:
        cmd += ["--max-model-len", str(max_model_len)]
    if revision:
        cmd += ["--revision", revision]
    return cmd + list(extra_args or [])


@contextlib.contextmanager
def serve_vllm(model: str, *, revision: str | None = None, extra_args: list[str] | None = None,
               max_model_len: int | None = None, executable: str = "vllm",
               log_path: str | Path | None = None,
               startup_timeout_s: float = 1800.0) -> Iterator[tuple[str, str]]:
    """`vllm serve MODEL` on a free local port, stopped on exit; yields (base_url, served name).
    The served name is `model` as given. vLLM is not a dependency: `executable` must be on PATH
    (or a path). The command line is logged; the server's output goes to
    `log_path` (a temporary file when None)."""
    import shutil
    import tempfile

    from distill.serving.launcher import free_port, launched

    words = shlex.split(executable)
    if not words or shutil.which(words[0]) is None:
        raise InputError(f"eval.server is vllm but `{executable}` is not on PATH (pip install "
                         "vllm, or name it in eval.vllm_executable)", key="eval.server")
    port = free_port()
    cmd = vllm_command(executable, model, port, revision=revision, max_model_len=max_model_len,
                       extra_args=extra_args)
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix=f"distill-vllm-{port}-", suffix=".log")
        os.close(fd)
    # Logged at INFO: the command is what someone reproducing a score needs first.
    log.info("eval: %s  (log: %s)", shlex.join(cmd), log_path)
    # launched(): its own process group (vLLM's engine and workers are its children, all
    # stopped together) and SIGTERM if this process dies.
    with launched(cmd, f"http://127.0.0.1:{port}/health", Path(log_path), startup_timeout_s,
                  what="vllm server", stop_timeout_s=60.0):
        yield f"http://127.0.0.1:{port}/v1", model


def _served(cfg: Recipe, model: str, revision: str | None, base_url: str | None,
            log_path: Path) -> Endpoint:
    @contextlib.contextmanager
    def endpoint(max_model_len: int | None = None) -> Iterator[tuple[str, str, str | None]]:
        if base_url:  # students already served elsewhere (cfg.eval.base_url)
            yield base_url.rstrip("/"), model, None
            return
        if cfg.eval.server == "vllm":
            with serve_vllm(model, revision=revision, extra_args=cfg.eval.server_args,
                            max_model_len=max_model_len, executable=cfg.eval.vllm_executable,
                            log_path=log_path) as (url, name):
                yield url, name, None
            return
        from distill.serving.launcher import serve_local
        kw: dict[str, Any] = {"extra_args": cfg.eval.server_args} if cfg.eval.server_args else {}
        with serve_local(model, revision=revision, **kw) as (url, name):
            yield url, name, None
    return endpoint


def _how_served(cfg: Recipe, base_url: str | None) -> str:
    return "endpoint" if base_url else cfg.eval.server


def _teacher(cfg: Recipe, log_path: Path) -> tuple[Endpoint, str]:
    """The teacher's own endpoint (an API teacher, with its key; a managed `vllm serve` with
    the teacher.vllm settings its size needs, which also fix its context) unless it is a local
    model that distill's server would serve and eval.server says to serve with vLLM."""
    from distill.serving.endpoint import teacher_endpoint

    t = cfg.teacher
    if t.base_url or t.backend != "http" or cfg.eval.server != "vllm":
        return (lambda max_model_len=None: teacher_endpoint(t)), "endpoint"
    return _served(cfg, t.model, t.revision, None, log_path), "vllm"


def _gguf(cfg: Recipe, path: Path, name: str, log_path: Path) -> Endpoint:
    @contextlib.contextmanager
    def endpoint(max_model_len: int | None = None) -> Iterator[tuple[str, str, str | None]]:
        from distill.serving.llama_cpp import serve_gguf
        with serve_gguf(path, name, log_path, max_model_len or 4096,
                        cfg.quantize.threads) as (url, served):
            yield url, served, None
    return endpoint


def quantized_models(cfg: Recipe, run_dir: Path, student_path: str,
                     stops: list[int] | None) -> list[EvalModel]:
    """The quantize stage's variants of the student (quantize/variants.json): GGUF files served
    by llama.cpp's server, torchao checkpoints as the student is served."""
    if not cfg.quantize.enabled:
        return []
    stage = RunDir(run_dir).require("quantize", complete=True)
    logs, e, out = RunDir(run_dir).eval.path / "logs", cfg.eval, []
    for v in stage.read_json("variants.json"):
        if v["role"] == "student":
            continue
        path = stage.path.resolve() / v["file"]
        key = f"run:quantize/{v['file']}@{v['key']}"
        if v["format"] == "gguf":
            out.append(EvalModel(v["role"], v["name"], key,
                                 _gguf(cfg, path, v["name"], logs / f"llama-{v['role']}.log"),
                                 "llama.cpp", student_path, None, 1,
                                 request_fields=SAMPLE_AS_VLLM))
        else:
            out.append(EvalModel(v["role"], v["name"], key,
                                 _served(cfg, str(path), None, None, logs / f"vllm-{v['role']}.log"),
                                 cfg.eval.server, str(path), None, e.max_n_per_request, stops))
    return out


def eval_models(cfg: Recipe, run_dir: Path) -> list[EvalModel]:
    """Teacher, base student, distilled student, and the student's quantized variants when the
    recipe quantizes it: the models every benchmark scores."""
    rd = RunDir(run_dir)
    train = rd.require("train", complete=True)     # the distilled student
    student_path = str(train.path.resolve() / "model")
    # A re-trained student lives at the same path: its manifest tells the weights apart. The
    # key leaves the absolute path out, so a moved run directory keeps its records.
    student_key = f"run:train/model@{record_id(train.manifest())}"
    t, s, e = cfg.teacher, cfg.train, cfg.eval
    logs = rd.eval.path / "logs"
    teacher, how = _teacher(cfg, logs / "vllm-teacher.log")
    # The teacher is asked as the generate stage asks it (an API that ignores `n` is set up
    # there); students, served here or by eval.base_url, take n as it comes unless told.
    teacher_n = e.max_n_per_request or cfg.generate.max_n_per_request
    # Students served here stop at their template's end of turn (end_of_turn_stops); the key
    # says so only when it adds a stop, so models that already stop keep their records.
    stops = {} if e.base_url else {role: end_of_turn_stops(path, rev) for role, path, rev in
                                   (("base", s.student, s.revision), ("student", student_path, None))}
    base_key = weights_key(s.student, s.revision)
    if stops.get("base"):
        base_key += f"+stop{stops['base']}"
    quantized = quantized_models(cfg, run_dir, student_path, stops.get("student") or None)
    return [
        EvalModel("teacher", t.model, weights_key(t.model, t.revision), teacher, how,
                  t.model, t.revision, teacher_n),
        EvalModel("base", s.student, base_key,
                  _served(cfg, s.student, s.revision, e.base_url, logs / "vllm-base.log"),
                  _how_served(cfg, e.base_url), s.student, s.revision, e.max_n_per_request,
                  stops.get("base") or None),
        EvalModel("student", cfg.publish.hub_repo or f"{cfg.run.name}-distilled", student_key,
                  _served(cfg, student_path, None, e.base_url, logs / "vllm-student.log"),
                  _how_served(cfg, e.base_url), student_path, None, e.max_n_per_request,
                  stops.get("student") or None),
        *quantized,
    ]
