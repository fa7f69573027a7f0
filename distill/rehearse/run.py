"""`distill rehearse RECIPE` and `distill pilot RECIPE --prompts N`: read a shipped recipe, write
a normal run directory (every stage, report/ with report/rehearsal.md) marked as a rehearsal.

A rehearsal runs the recipe as written, shrunk only in size, end to end on a CPU:
- the student's and teacher's REAL tokenizers and chat templates (the Hub, or `--tokenizers DIR`
  holding one folder per model name), checked against the recipe before anything runs;
- the recipe's prompt sources and benchmarks in their real Hub layouts: read from the Hub, or
  offline (`--data DIR`) from local copies of the Hub repos built from the data on hand
  (distill/rehearse/hub_layouts.py);
- the student's real architecture from its config.json, at a tiny width and depth, random
  weights (distill/rehearse/models.py);
- a teacher stand-in speaking the recipe endpoint's dialect (distill/serving/dryrun.py), with an
  answer key made from the same rows, so some traces are right, some wrong, some truncated;
- training launched as the recipe says (`train.launch`), on 2 CPU processes with accelerate;
- evaluation served as the recipe says: with `eval.server: vllm`, the exact `vllm serve`
  command line goes through a shim that serves with distill's own server under vLLM's rules.
What it changes is listed in report/rehearsal.md, with what a rehearsal cannot show.

A pilot (`--prompts N`) sends N real prompts to the recipe's real teacher and filters the
traces for real (prompts, generate, filter as written), then rehearses the rest (train,
evaluate, publish with the stand-ins), and prints what the traces measured: tokens/s, $ per
kept trace, the keep rate per filter, the length-cap hit rate, and the plan of the full run
recomputed from them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from distill.config import CONFIG_DIR, Recipe
from distill.errors import InputError
from distill.records import RunDir, current_traces

log = logging.getLogger(__name__)

CPU_LAUNCH = CONFIG_DIR / "accelerate" / "cpu-ddp.yaml"
# Models of one family share a tokenizer and template: a folder of --tokenizers may stand for
# its siblings (Qwen3-235B-A22B ships the Qwen3-8B files).
SIBLINGS = {"Qwen3-235B-A22B": "Qwen3-8B", "Qwen3-30B-A3B": "Qwen3-8B",
            "Qwen2.5-Math-7B-Instruct": "Qwen2.5-Math-7B", "DeepSeek-V3": "DeepSeek-R1"}
DRYRUN_KEY_ENV = "DISTILL_DRYRUN_API_KEY"


@dataclass
class Sizes:
    """What a rehearsal shrinks: how many prompts, steps, questions and tokens."""
    prompts_per_source: int = 12
    samples_per_prompt: int = 2
    train_max_length: int = 1024
    train_steps: int = 4
    processes: int = 2
    eval_questions: int = 2
    eval_samples: int = 1
    eval_max_tokens: int = 256


@dataclass
class Setup:
    """What a rehearsal stands in with; filled by `prepare`."""
    student_tokenizer: str
    teacher_tokenizer: str
    tiny_student: Path
    data: dict[str, Path] = field(default_factory=dict)   # Hub id -> local copy (offline)
    data_files: dict[str, str] = field(default_factory=dict)  # benchmark -> local file/folder
    answer_key: Path | None = None
    dialect: str = "vllm"


def tokenizer_source(model: str, tokenizers: Path | None) -> str:
    """`model`'s tokenizer: a folder of `tokenizers` named after the model (or a sibling of its
    family), else the Hub id itself (an API model name: its open weights' id)."""
    from distill.plan.params import API_MODELS
    model = API_MODELS.get(model, model)
    if tokenizers is None:
        return model
    name = model.rstrip("/").split("/")[-1]
    for candidate in (name, SIBLINGS.get(name)):
        if candidate and (Path(tokenizers) / candidate / "tokenizer_config.json").is_file():
            return str(Path(tokenizers) / candidate)
    raise InputError(f"no tokenizer folder for {model!r} in {tokenizers} (looked for {name!r})",
                     file=str(tokenizers))


def dialect_of(cfg: Recipe) -> str:
    """The endpoint dialect a recipe talks to: DeepSeek's API (its host, or its model names),
    else a vLLM server."""
    from distill.plan.params import API_MODELS
    url = cfg.teacher.base_url or ""
    return "deepseek" if "api.deepseek.com" in url or cfg.teacher.model in API_MODELS else "vllm"


# ------------------------------------------------------------------------------ the data

def _benchmark_files(cfg: Recipe, shared: Path, copies: dict[str, Path]) -> dict[str, str]:
    """Local data for every benchmark the run reads (eval and decontamination): the release
    files on hand, or the local Hub copies where the loader's Hub layout is what to rehearse."""
    from distill.grading.benchmarks import get_benchmark, list_benchmarks

    files = {
        "math500": shared / "math500" / "test.jsonl",
        "aime24": shared / "aime" / "aime24.jsonl",
        "aime25": shared / "aime" / "aime25.jsonl",
        "gsm8k": shared / "gsm8k" / "test.jsonl",
        "humaneval": shared / "humaneval" / "HumanEval.jsonl.gz",
        "mbpp": shared / "mbpp" / "sanitized-mbpp.json",
    }
    out = {name: str(path) for name, path in files.items() if path.exists()}
    for name in list_benchmarks():
        hub = getattr(get_benchmark(name), "hub", None)
        if hub in copies:       # the Hub layout, from the local copy of the repo
            out[name] = str(copies[hub])
    return {**out, **cfg.eval.data_files}


def build_answer_key(cfg: Recipe, path: Path, copies: dict[str, Path] | None = None) -> Path:
    """The dry-run teacher's answer key: for every prompt source row and every benchmark
    question the run will ask, the text that identifies it and its answer (gold value, a
    reference program, the right option). Read through the project's own loaders, so it
    covers exactly what the run asks."""
    import datasets

    from distill.grading.benchmarks import get_benchmark

    entries: list[dict] = []
    for src in cfg.prompts.sources:
        if src.kind != "hf":
            continue
        ds = datasets.load_dataset(src.path, src.config_name, split=src.split)
        for i, row in enumerate(ds):
            if src.count is not None and i >= 20 * src.count:
                break
            prompt = str(row.get(src.prompt_field) or "").strip()
            if not prompt:
                continue
            if src.tests_field:
                code = row.get("code") or row.get("canonical_solution") or row.get("solution")
                if code:
                    entries.append({"match": prompt, "kind": "code", "answer": str(code)})
            elif src.answer_field and row.get(src.answer_field) not in (None, ""):
                entries.append({"match": prompt, "kind": "math", "answer": str(row[src.answer_field])})
    for name in cfg.eval.benchmarks:
        bench = get_benchmark(name)
        own = cfg.eval.benchmark.get(name)
        problems = bench.problems(cfg.eval.data_files.get(name), cfg.eval.limit,
                                  own.options if own else None)
        for p in problems:
            prompt = p["messages"][-1]["content"]
            kind = p.get("verifier")
            if kind == "math" and p.get("answer"):
                entries.append({"match": prompt, "kind": "math", "answer": str(p["answer"])})
            elif kind == "choice" and p.get("choices"):
                index = "ABCDEFGHIJ".index(str(p["answer"]).strip().upper())
                entries.append({"match": prompt, "kind": "choice", "answer": p["choices"][index]})
            elif kind == "code":
                code = p.get("reference_solution") or p.get("canonical_solution")
                if code:
                    code = (p.get("code_prefix") or "") + code if p.get("code_prefix") else code
                    entries.append({"match": prompt, "kind": "code", "answer": code})
    if copies:   # the copies' own key: solutions the loaders do not carry (LiveCodeBench's)
        from distill.rehearse.hub_layouts import answer_key
        entries += answer_key(copies)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------- the preflight

def preflight(cfg: Recipe, student_tokenizer: str) -> list[str]:
    """The checks of the train stage that need no weights, on the recipe as written with the
    student's real tokenizer and config.json: its template, end-of-turn and pad tokens, the
    vocabulary against the embedding rows, its positions against train.max_length. Raises
    InputError as the stage would; returns what it checked, for the rehearsal's report."""
    from distill.plan.params import arch_of, load_config
    from distill.chat import prepare_tokenizer
    from distill.positions import positions

    t = cfg.train.model_copy(update={"revision": None})
    tok, stop_ids = prepare_tokenizer(t, student_tokenizer)
    config, source = load_config(cfg.train.student, cfg.train.revision)
    arch = arch_of(config, cfg.train.student, source)
    if len(tok) > arch.vocab:
        raise InputError(f"the tokenizer of {cfg.train.student!r} has {len(tok):,} tokens but its "
                         f"model {arch.vocab:,} embedding rows", key="train.student")
    pos = positions(cfg.train, arch.max_positions or None, cfg.train.student)
    return [f"tokenizer of `{cfg.train.student}` ({student_tokenizer}): {len(tok):,} tokens for "
            f"{arch.vocab:,} embedding rows; end of turn `{tok.eos_token}`, pad `{tok.pad_token}`, "
            f"stop ids {stop_ids}; the template keeps the <think> reasoning and its mask ends "
            "with the end-of-turn token",
            f"positions: config.json {pos['model']:,}, trained {pos['trained']:,}"
            + (f", RoPE scaling {pos['rope_scaling']}" if pos["rope_scaling"] else "")
            + f" for train.max_length {cfg.train.max_length:,}"]


# ------------------------------------------------------------------------------ shrinking

def shrink(cfg: Recipe, setup: Setup, teacher_url: str | None, sizes: Sizes,
           pilot: int | None = None) -> Recipe:
    """The rehearsal's recipe: the one as written with only sizes and endpoints changed (each
    change is listed by `changes`)."""
    d = cfg.model_dump(mode="json")
    d["run"]["name"] = f"{cfg.run.name}-{'pilot' if pilot else 'rehearsal'}"
    d["run"]["rehearsal"] = True
    for src in d["prompts"]["sources"]:
        if src["kind"] == "hf" and src["path"] in setup.data:
            src["path"], src["revision"] = str(setup.data[src["path"]]), None
        cap = (pilot // len(d["prompts"]["sources"]) or 1) if pilot else sizes.prompts_per_source
        src["count"] = cap if src["count"] is None else min(src["count"], cap)
    if not pilot:
        d["teacher"].update(base_url=teacher_url, backend="http")
        if setup.dialect == "deepseek":
            d["teacher"]["api_key_env"] = DRYRUN_KEY_ENV
        d["generate"]["samples_per_prompt"] = min(d["generate"]["samples_per_prompt"],
                                                  sizes.samples_per_prompt)
    d["filter"]["workers"] = min(d["filter"]["workers"], 2)
    t = d["train"]
    t["student"] = str(setup.tiny_student)
    t["revision"] = None
    t["max_length"] = min(t["max_length"], sizes.train_max_length)
    t["max_steps"], t["grad_accum"] = sizes.train_steps, 1
    t["save_steps"] = max(1, sizes.train_steps // 2)
    t["liger"] = False                  # Triton kernels: GPU only
    t["launch"] = {"accelerate_config": str(CPU_LAUNCH), "num_processes": sizes.processes,
                   "extra_args": []}
    if t["adapter"] == "qlora":         # bitsandbytes' 4-bit base: GPU only
        t["adapter"] = "lora"
    e = d["eval"]
    e["data_files"] = {**setup.data_files, **e["data_files"]}
    e["limit"] = min(e["limit"] or sizes.eval_questions, sizes.eval_questions)
    e["max_tokens"] = sizes.eval_max_tokens
    e["max_concurrency"] = min(e["max_concurrency"], 16)
    for name in e["benchmarks"]:
        own = e["benchmark"].setdefault(name, {})
        own["samples"] = min(own.get("samples") or e.get("samples") or 64, sizes.eval_samples)
        if own.get("max_tokens"):
            own["max_tokens"] = min(own["max_tokens"], sizes.eval_max_tokens)
    if e["samples"]:
        e["samples"] = min(e["samples"], sizes.eval_samples)
    e["vllm_executable"] = f"{shlex.quote(sys.executable)} -m distill.rehearse.vllm_shim"
    d["publish"].update(push=False, dry_run=True)
    return Recipe.model_validate(d)


def changes(real: Recipe, rehearsed: Recipe, prefix: str = "") -> list[str]:
    """Every setting the rehearsal changed, as `key: real -> rehearsed`."""
    out = []

    def walk(a, b, key):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{key}.{k}" if key else k)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{key}.{i}")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    walk(real.model_dump(mode="json"), rehearsed.model_dump(mode="json"), "")
    return out


# --------------------------------------------------------------------------- the stand-ins

def prepare(cfg: Recipe, work: Path, *, data_dir: Path | None, tokenizers: Path | None,
            dialect: str | None) -> Setup:
    from distill.rehearse.models import build_tiny

    student_tok = tokenizer_source(cfg.train.student, tokenizers)
    teacher_tok = tokenizer_source(cfg.teacher.model, tokenizers)
    setup = Setup(student_tokenizer=student_tok, teacher_tokenizer=teacher_tok,
                  tiny_student=build_tiny(cfg.train.student, student_tok, seed=cfg.run.seed,
                                          revision=cfg.train.revision),
                  dialect=dialect or dialect_of(cfg))
    if data_dir is not None:
        setup.data = hub_copies(work, Path(data_dir))
        setup.data_files = _benchmark_files(cfg, Path(data_dir), setup.data)
    return setup


COPY_ROWS = 12   # tasks per rebuilt Hub copy (MBPP+, HumanEval+: one sandboxed run each)


def hub_copies(work: Path, data_dir: Path) -> dict[str, Path]:
    """Local copies of the recipes' Hub datasets, built once per version of the builder and
    of the data on hand (cached under `work`), in a temp folder renamed into place."""
    import fcntl
    import hashlib
    import shutil
    import tempfile

    from distill.rehearse import hub_layouts
    h = hashlib.sha256(Path(hub_layouts.__file__).read_bytes())
    for f in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(data_dir)}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    final = work / "hub" / f"{h.hexdigest()[:12]}-{COPY_ROWS}"
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # two rehearsals at once build it once
        if not (final / "copies.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
            try:
                built = hub_layouts.build_hub_copies(tmp, data_dir, COPY_ROWS)
                (tmp / "copies.json").write_text(json.dumps(
                    {k: str(Path(v).relative_to(tmp)) for k, v in built.items()}))
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return {k: final / v for k, v in json.loads((final / "copies.json").read_text()).items()}


@contextlib.contextmanager
def dry_run_teacher(cfg: Recipe, setup: Setup, log_path: Path) -> Iterator[str]:
    """The dry-run teacher on a free local port for as long as the block runs; yields its URL.
    The DeepSeek dialect demands a bearer key, set in this process's environment only."""
    from distill.serving.launcher import free_port, launched

    port = free_port()
    cmd = [sys.executable, "-m", "distill.serving.dryrun", "--tokenizer", setup.teacher_tokenizer,
           "--dialect", setup.dialect, "--model", cfg.teacher.model, "--port", str(port),
           "--parent-pid", str(os.getpid())]
    if setup.answer_key:
        cmd += ["--answers", str(setup.answer_key)]
    if setup.dialect == "deepseek":
        os.environ.setdefault(DRYRUN_KEY_ENV, secrets.token_hex(16))
        cmd += ["--api-key-env", DRYRUN_KEY_ENV]
    with launched(cmd, f"http://127.0.0.1:{port}/health", log_path, 300.0,
                  what="dry-run teacher"):
        yield f"http://127.0.0.1:{port}/v1"


# ----------------------------------------------------------------------------- the report

# What no rehearsal on a CPU can show, and the measurement that would.
CANNOT_SHOW = [
    ("the student's quality and the teacher's", "a real run: the stand-ins write noise by design"),
    ("GPU memory per configuration (ZeRO-3 / FSDP sharding, Liger, bf16, checkpointing)",
     "bench/sft_throughput.py on one GPU and the train stage's preflight estimate (train/memory.py)"),
    ("ZeRO-3 / FSDP themselves: the rehearsal launches the same script with DDP on 2 CPU processes "
     "(DeepSpeed and FSDP's sharded states need CUDA)", "one step of the recipe's launch on its GPUs"),
    ("training and serving throughput (tokens/s, MFU), vLLM's batching and KV cache",
     "bench/sft_throughput.py; a pilot's generate stage (tokens/s of the real endpoint)"),
    ("the teacher's real answers: keep rates, lengths, the length-cap hit rate, cost per kept trace",
     "`distill pilot RECIPE --prompts 200` against the real endpoint"),
    ("the Hub's network path, gated access (GPQA) and rate limits", "a pilot run with HF_TOKEN set"),
]


def _teacher_command(real: Recipe) -> str | None:
    """The `vllm serve` command the plan gives for the recipe's teacher on its hardware."""
    try:
        from distill.plan import make_plan
        chosen = make_plan(real)["commands"].get(real.plan.hardware)
    except Exception:  # noqa: BLE001  (an API model without published weights: no command)
        return None
    return chosen["command"] if chosen else None


def write_report(run_dir: Path, real: Recipe, rehearsed: Recipe, setup: Setup, checks: list[str],
                 timings: dict[str, float], pilot: dict | None = None) -> Path:
    from distill.records import write_text

    launch = real.train.launch
    real_cmd = ("accelerate launch --config_file " + launch.accelerate_config
                + (f" --num_processes {launch.num_processes}" if launch.num_processes else "")
                + f" -m distill.cli train <run_dir>/recipe.yaml --run-dir <run_dir>"
                if launch.accelerate_config else "in the calling process (train.launch unset)")
    lines = [f"# Rehearsal of `{real.run.name}`", "",
             "Every stage ran as the recipe says, on stand-ins: the numbers in this report check "
             "the pipeline and measure nothing about a model.", "",
             "## Stages", "", "| stage | seconds |", "|---|--:|"]
    lines += [f"| {name} | {secs:.1f} |" for name, secs in timings.items()]
    lines += ["", "## Checked on the recipe as written", ""] + [f"- {c}" for c in checks]
    teacher_cmd = _teacher_command(real)
    if teacher_cmd:
        lines += [f"- the teacher a real run serves (`distill plan`): `{teacher_cmd}`"]
    lines += ["", "## Stand-ins", "",
              f"- Student: `{setup.tiny_student}` (the real architecture and tokenizer of "
              f"`{real.train.student}`, tiny, random weights)",
              f"- Tokenizers: student {setup.student_tokenizer}, teacher {setup.teacher_tokenizer}",
              f"- Teacher: " + ("the real endpoint for prompts, generate and filter; the dry-run "
                                "teacher for evaluation" if pilot else
                                f"the dry-run teacher, {setup.dialect} dialect, answer key "
                                f"`{setup.answer_key}`"),
              f"- Data: " + (", ".join(f"`{k}` from `{v}`" for k, v in setup.data.items())
                             or "the recipe's Hub datasets, fewer rows"),
              f"- Training launch: a real run `{real_cmd}`; here "
              f"`accelerate launch --config_file {CPU_LAUNCH.name} --num_processes "
              f"{rehearsed.train.launch.num_processes}` on CPU", "",
              "## Settings changed (sizes and endpoints only)", ""]
    lines += [f"- `{c}`" for c in changes(real, rehearsed)]
    lines += ["", "## What a rehearsal cannot show", "", "| not shown | measured by |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in CANNOT_SHOW]
    if pilot:
        lines += ["", "## Pilot: what the real teacher's traces measured", "", "```",
                  json.dumps(pilot, indent=2, default=str), "```"]
    path = RunDir(run_dir).report / "rehearsal.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- the doors

def rehearse(recipe: str, overrides: list[str] | None = None, run_dir: Path | None = None, *,
             data_dir: Path | None = None, tokenizers: Path | None = None,
             dialect: str | None = None, sizes: Sizes | None = None,
             pilot_prompts: int | None = None) -> Path:
    """Runs the rehearsal (or, with `pilot_prompts`, the pilot) of `recipe`; returns the run
    directory."""
    from distill.pipeline import STAGES, run_stage
    from distill.recipes import read_recipe

    sizes = sizes or Sizes()
    real = read_recipe(recipe, overrides or [])
    kind = "pilot" if pilot_prompts else "rehearsal"
    run_dir = Path(run_dir or Path("runs") / f"{real.run.name}-{kind}")
    work = Path(os.environ.get("DISTILL_CACHE") or "~/.cache/distill").expanduser() / "rehearsal"
    setup = prepare(real, work, data_dir=data_dir, tokenizers=tokenizers,
                    dialect=None if pilot_prompts else dialect)
    checks = preflight(real, setup.student_tokenizer)
    # The pilot's data stages talk to the real teacher as written; the rest (and a whole
    # rehearsal) to the dry-run teacher.
    data_cfg = shrink(real, setup, None, sizes, pilot_prompts) if pilot_prompts else None
    setup.answer_key = build_answer_key(shrink(real, setup, "http://127.0.0.1:9/v1", sizes),
                                        RunDir(run_dir).rehearsal / "answer_key.jsonl", setup.data)
    timings: dict[str, float] = {}
    measured = None
    with dry_run_teacher(real, setup, RunDir(run_dir).rehearsal / "dryrun-teacher.log") as url:
        rest = shrink(real, setup, url, sizes)
        if data_cfg is not None:    # one run: the pilot's prompts and sampling throughout
            rest = Recipe.model_validate({**rest.model_dump(mode="json"),
                                          **data_cfg.model_dump(mode="json", include={"run", "prompts", "generate"})})
        for name in STAGES:
            cfg = data_cfg if data_cfg is not None and name in ("prompts", "generate", "filter") else rest
            log.info("%s: %s", kind, name)
            start = time.monotonic()
            run_stage(name, cfg, run_dir)
            timings[name] = time.monotonic() - start
            if data_cfg is not None and name == "filter":
                measured = pilot_summary(real, run_dir, timings["generate"])
    write_report(run_dir, real, rest, setup, checks, timings, measured)
    if measured is not None:
        from distill.records import write_json
        write_json(RunDir(run_dir).report / "pilot.json", measured)
    return run_dir


def pilot_summary(real: Recipe, run_dir: Path, generate_s: float) -> dict:
    """What the real teacher's traces measured, and the full recipe's generation projected
    from them (distill.plan with the run's records: mean lengths, throughput, cost)."""
    from distill.plan import make_plan

    rd = RunDir(run_dir)
    samples = truncated = 0
    completion = cost = 0.0
    # The pilot's traces: those of the generation the generate stage just completed.
    for rec in current_traces(run_dir, (rd.generate.manifest() or {}).get("gen_hash")):
        usage = rec.get("usage") or {}
        samples += 1
        completion += int(usage.get("completion_tokens") or 0) / max(1, int(usage.get("choices") or 1))
        truncated += rec.get("finish_reason") == "length"
        cost += float(rec.get("cost") or 0)
    counts = rd.filter.read_json("counts.json")
    kept = int(counts.get("kept") or 0)
    total = int(counts.get("total") or samples)
    rejected = counts.get("rejected") or {}
    plan = make_plan(real, run_dir, prompts_from_recipe=True)
    gen = plan.get("generation") or {}
    return {
        "samples": samples, "kept": kept,
        "completion_tokens_per_s": round(completion / generate_s, 1) if generate_s else None,
        "mean_completion_tokens": round(completion / samples, 1) if samples else None,
        "cost": round(cost, 6),
        "usd_per_kept_trace": round(cost / kept, 6) if kept else None,
        "length_cap_hit_rate": round(truncated / samples, 4) if samples else None,
        "keep_rate": round(kept / total, 4) if total else None,
        "rejected_per_filter": rejected,
        "reject_rate_per_filter": {k: round(v / total, 4) for k, v in rejected.items()} if total else {},
        "full_run": {"prompts": gen.get("prompts"), "prompts_source": gen.get("prompts_source"),
                     "tokens_per_s": gen.get("tokens_per_s"),
                     "tokens_per_s_source": gen.get("tokens_per_s_source"),
                     "projected": gen.get("projected"),
                     "kept_traces": round((gen.get("projected") or {}).get("samples", 0) * kept / total)
                     if total and gen.get("projected") else None},
    }


def pilot_text(m: dict) -> str:
    """The pilot's figures as the terminal shows them."""
    def usd(x):
        return "n/a" if x is None else f"${x:,.4f}" if x < 100 else f"${x:,.0f}"
    full = m["full_run"]
    proj = full.get("projected") or {}
    lines = [
        f"pilot: {m['samples']} samples from the real teacher, {m['kept']} kept "
        f"(keep rate {100 * (m['keep_rate'] or 0):.1f}%)",
        f"  teacher: {m['completion_tokens_per_s'] or 0:,.0f} completion tokens/s over the stage, "
        f"{m['mean_completion_tokens'] or 0:,.0f} tokens per sample, length cap hit by "
        f"{100 * (m['length_cap_hit_rate'] or 0):.1f}%",
        f"  cost: {usd(m['cost'])}, {usd(m['usd_per_kept_trace'])} per kept trace",
        "  rejected: " + (", ".join(f"{k} {v} ({100 * m['reject_rate_per_filter'][k]:.1f}%)"
                                    for k, v in m["rejected_per_filter"].items()) or "none"),
    ]
    if proj:
        hours = proj.get("device_hours")
        lines.append(f"  full run ({full['prompts']:,} prompts, {full['prompts_source']}): "
                     f"{proj['samples']:,} samples, {proj['output_tokens']:,} output tokens, "
                     f"API {usd(proj.get('api_usd'))}, self-hosted {usd(proj.get('self_hosted_usd'))} "
                     f"({'n/a' if hours is None else format(hours, ',.0f')} device-hours at "
                     f"{full['tokens_per_s'] or 0:,.0f} tokens/s, {full['tokens_per_s_source']}), "
                     f"~{full['kept_traces']:,} kept traces at the pilot's keep rate")
    return "\n".join(lines)
