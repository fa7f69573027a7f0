"""Recipes: one pydantic model per YAML section, loaded from a file plus dotted overrides.

`load_recipe(path, overrides)` reads YAML, applies `-o a.b=value` overrides, validates, and
raises `InputError` naming the file, the key and (for YAML) the line on any mistake.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import Self

from distill.errors import InputError

REPO = Path(__file__).resolve().parents[1]
# The shipped recipes (`smoke`, `r1-to-7b`, ...) and accelerate launch configs.
CONFIG_DIR = REPO / "configs"

# ------------------------------------------------------------------------ names in a recipe
# A recipe names entries of registries that live above this module; each is checked here, when
# the recipe loads, not at the stage that first uses it. Benchmarks are the files in evals/
# (read as names, not imported: distill.grading.benchmarks imports them); the other lists copy
# their registry, and tests/test_config.py holds each copy to its source.
EVALS_DIR = REPO / "evals"
TOY_FAMILIES = ("arith", "mult", "code")               # distill.toy.tasks.CATEGORIES
TOY_MODELS = ("toy:teacher", "toy:teacher-bpe", "toy:student", "toy:student-l")  # distill.toy.models.resolve_model
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                 "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau",
                 "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
                 "greedy")                       # transformers.trainer_utils.SchedulerType
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3",
              "proportional")                    # transformers.modeling_rope_utils


def benchmark_names() -> list[str]:
    """The benchmarks in evals/: one file each, `_*.py` being shared helpers."""
    return sorted(p.stem for p in EVALS_DIR.glob("*.py") if not p.stem.startswith("_"))


def close_match(value: Any, choices: list[str] | tuple[str, ...]) -> str | None:
    """The choice closest to a misspelt `value`, if one is close enough."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return close[0] if close else None


def unknown_name(what: str, value: Any, choices: list[str] | tuple[str, ...]) -> str:
    """The message for a name not in `choices`, with the closest one if any: unknown benchmark
    'gsm8' (did you mean 'gsm8k'?); choose from: aime24, ..."""
    close = close_match(value, choices)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown {what} {value!r}{hint}; choose from: {', '.join(map(str, choices))}"


def _bad(message: str, *at: Any) -> PydanticCustomError:
    """A validation error at `at` below the model that raises it (load_recipe appends it to the
    error's location, so the message names the exact key and line)."""
    return PydanticCustomError("recipe_name", "{message}", {"message": message, "at": at})


def _check_toy_model(name: str | None, *at: Any) -> None:
    if name and name.startswith("toy:") and name not in TOY_MODELS:
        raise _bad(unknown_name("toy model", name, TOY_MODELS), *at)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunConfig(Section):
    name: str
    seed: int = 0
    # Set by `distill rehearse` / `distill pilot`: every report and card of the run says it is a
    # rehearsal, and publish refuses to push it (its student is a tiny random-init stand-in).
    rehearsal: bool = False


class PromptSource(Section):
    """One source of prompts. `kind: toy` makes synthetic tasks; `hf` reads a Hub dataset;
    `jsonl` reads a local file. Field names map the dataset's columns to a prompt."""
    name: str
    kind: Literal["toy", "hf", "jsonl"]
    category: str
    count: int | None = None               # at most this many prompts (None: all)
    family: str | None = None              # toy: task family (arith, mult, code)
    path: str | None = None                # hf: dataset id; jsonl: file path
    config_name: str | None = None         # hf: dataset config
    split: str = "train"
    revision: str | None = None
    prompt_field: str = "problem"
    answer_field: str | None = "answer"    # gold answer, verified with math-verify
    # code tests (assert statements), run in the sandbox; several columns are joined in order
    # (e.g. [test_setup_code, test_list])
    tests_field: str | list[str] | None = None
    entry_point_field: str | None = None
    # str.format template of the user turn: {prompt} is the prompt field, {<column>} any column
    # of the row (a list column is joined by newlines), e.g. MBPP's "{prompt}\n{test_list}".
    prompt_template: str = "{prompt}"      # e.g. "{prompt}\nPut the final answer in \\boxed{{}}."
    # Keep only rows whose column has this value (or one of a list of values), e.g.
    # {question_type: math-word-problem, problem_is_valid: "Yes"} for NuminaMath-1.5.
    where: dict[str, Any] = {}

    @model_validator(mode="after")
    def _toy_family(self) -> Self:
        if self.family is not None and self.family not in TOY_FAMILIES:
            raise _bad(unknown_name("toy family", self.family, TOY_FAMILIES), "family")
        return self


class PromptsConfig(Section):
    sources: list[PromptSource] = Field(min_length=1)
    system_prompt: str | None = None


class VllmConfig(Section):
    """vLLM settings for a self-hosted teacher: the flags of a managed `vllm serve`
    (`teacher.backend: vllm_serve`) and the engine arguments of the offline engine
    (`teacher.backend: vllm_offline`)."""
    tensor_parallel_size: int = Field(1, ge=1)
    expert_parallel: bool = False          # --enable-expert-parallel (MoE experts across GPUs)
    data_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=16)  # context length (prompt + max_tokens)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    reasoning_parser: str | None = None    # e.g. deepseek_r1, qwen3: reasoning_content apart
    dtype: str | None = None
    extra_args: list[str] = []             # further `vllm serve` flags, verbatim
    executable: str = "vllm"               # the vllm command (a path, or on PATH)
    port: int | None = Field(None, ge=1, le=65535)  # None: a free port
    startup_timeout_s: float = Field(3600.0, gt=0)  # loading a 671B model takes a while


class TeacherConfig(Section):
    """How the teacher is reached. `backend: http` (default) speaks the OpenAI chat-completions
    API to `base_url`, or, with `base_url` unset, to distill's own server started for the
    stage. `vllm_serve` starts `vllm serve` with the `vllm` settings and talks to it over HTTP;
    `vllm_offline` runs the vLLM engine in process (single-node batch jobs on GPU)."""
    model: str
    backend: Literal["http", "vllm_serve", "vllm_offline"] = "http"
    base_url: str | None = None
    api_key_env: str | None = None         # name of the environment variable holding the key
    revision: str | None = None
    vllm: VllmConfig = VllmConfig()

    @model_validator(mode="after")
    def _one_endpoint(self) -> Self:
        if self.backend != "http" and self.base_url:
            raise ValueError(f"base_url is for backend http; backend {self.backend} starts its own "
                             "teacher (unset base_url, or set backend: http)")
        _check_toy_model(self.model, "model")
        return self


class GenerateConfig(Section):
    samples_per_prompt: int = Field(1, ge=1)
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(32768, ge=1)
    top_logprobs: int = Field(0, ge=0, le=20)  # >0 stores the teacher's top-k per token
    seed: int | None = None                 # per-request seeds derived from it (servers that honour them)
    extra_body: dict[str, Any] = {}         # merged into every request; a null drops a field
    max_n_per_request: int | None = Field(None, ge=1)  # 1 for APIs that ignore n (DeepSeek)
    # limits
    max_concurrency: int = Field(64, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)  # prompt + completion, as providers count
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(600.0, gt=0)   # per request, in total
    backoff_s: float = Field(1.0, gt=0)     # first retry waits up to this (doubling, jittered)
    max_backoff_s: float = Field(60.0, gt=0)
    # cost ($ per million tokens)
    price_per_m_input: float = 0.0          # prompt tokens
    price_per_m_output: float = 0.0         # completion tokens (reasoning included, unless below)
    price_per_m_reasoning: float | None = None  # reasoning tokens, when priced apart from output
    price_per_m_cached_input: float | None = None  # prompt tokens served from the provider's cache
    # spend caps on the run directory's total, checked before each request (distill/teacher/budget.py)
    max_usd: float | None = Field(None, gt=0)        # an API teacher: $ at the prices above
    max_gpu_hours: float | None = Field(None, gt=0)  # a managed vllm serve: wall time x its GPUs
    # sharding across machines (Ray)
    shards: int = Field(1, ge=1)            # >1: the prompt set split by id across Ray tasks
    ray_address: str | None = None          # None: a local Ray; "auto": the cluster this node is in
    gpus_per_shard: float = Field(0.0, ge=0)  # GPUs a shard task reserves (its own vllm_serve)

    @model_validator(mode="after")
    def _caps(self) -> Self:
        if self.max_usd is not None and self.max_gpu_hours is not None:
            raise _bad("set max_usd (an API teacher's dollars) or max_gpu_hours (the GPU time of "
                       "a vllm serve distill starts), not both", "max_gpu_hours")
        if self.max_usd is not None:
            if not (self.price_per_m_input or self.price_per_m_output or self.price_per_m_reasoning):
                raise _bad("max_usd counts dollars at price_per_m_input / price_per_m_output, and "
                           "no price is set: set the teacher's prices (a self-hosted teacher: "
                           "max_gpu_hours)", "max_usd")
            body = {"max_tokens": self.max_tokens, **self.extra_body}
            if not (body.get("max_completion_tokens") or body.get("max_tokens")):
                raise _bad("max_usd needs a bound on every answer, and extra_body drops max_tokens "
                           "without a max_completion_tokens", "max_usd")
        return self


class FilterConfig(Section):
    """The filter stage, cheapest checks first (distill/filters/stage.py). `input` filters a
    JSONL file or Hub dataset of chat `messages` (with gold answers or tests) instead of the
    traces of the generate stage."""
    input: str | None = None               # JSONL / JSON / Parquet file, or a Hub dataset id
    input_split: str = "train"             # split of a Hub dataset
    verify: bool = True                    # math-verify answers, run code tests in the sandbox
    drop_truncated: bool = True            # finish_reason == "length"
    require_think: bool = True             # balanced <think>...</think>
    require_answer: bool = True            # a final answer the verifier can read
    drop_repetition: bool = True           # repetition loops at the end, or highly repetitive text
    min_tokens: int | None = Field(None, ge=0)   # length bounds on reasoning + answer
    max_tokens: int | None = Field(None, ge=1)
    tokenizer: str | None = None           # counts tokens for the bounds (default: the teacher's
                                           # usage.completion_tokens)
    decontaminate: list[str] | Literal["all", "none"] = "all"   # benchmarks in evals/
    decontaminate_ngram: int = Field(8, ge=1)                   # open-r1's default
    decontaminate_minhash: float | None = Field(0.8, gt=0, le=1)  # Jaccard; None: n-grams only
    dedup: Literal["exact", "minhash", "none"] = "exact"   # minhash: exact first, then near
    dedup_threshold: float = Field(0.8, gt=0, le=1)        # MinHash Jaccard for near duplicates
    select: Literal["all", "shortest"] = "all"   # per prompt: every correct sample, or the shortest
    max_per_prompt: int | None = Field(None, ge=1)   # keep at most k correct samples per prompt
    code_timeout_s: float = Field(10.0, gt=0)
    code_memory_mb: int = Field(1024, ge=64)
    workers: int = Field(2, ge=1)

    @field_validator("decontaminate", mode="before")
    @classmethod
    def _benchmarks(cls, value: Any) -> Any:
        names = benchmark_names()
        if isinstance(value, str) and value not in ("all", "none"):
            if value in names:
                raise _bad(f"a list of benchmarks, or all / none: write [{value}]")
            raise _bad(unknown_name("value", value, ["all", "none"])
                       + ", or a list of benchmarks in evals/")
        if isinstance(value, (list, tuple)):
            for i, name in enumerate(value):
                if isinstance(name, str) and name not in names:
                    raise _bad(unknown_name("benchmark", name, names), i)
        return value

    @model_validator(mode="after")
    def _toy_tokenizer(self) -> Self:
        _check_toy_model(self.tokenizer, "tokenizer")
        return self


class LoraConfig(Section):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


class LogitKDConfig(Section):
    """Logit distillation from the teacher's stored top-k logprobs (`generate.top_logprobs`):
    loss = (1 - weight) x cross-entropy on the trace + weight x forward KL(teacher || student)
    over the teacher's top-k tokens plus one tail bucket for the rest of the vocabulary."""
    weight: float = Field(0.5, ge=0.0, le=1.0)
    teacher_tokenizer: str | None = None   # default: teacher.model (an API teacher: name its tokenizer)
    on_mismatch: Literal["error", "sft"] = "error"  # different vocabularies: stop, or train SFT only
    # (method: gold distils logits across different tokenizers)


class OnPolicyConfig(Section):
    """On-policy distillation (TRL DistillationTrainer): the student samples completions of the
    kept prompts and learns the teacher's per-token distribution on them."""
    teacher: Literal["local", "server"] = "local"  # local: loaded beside the student; server: vLLM
    teacher_model: str | None = None       # local teacher (default: teacher.model)
    teacher_url: str | None = None         # server teacher (default: teacher.base_url)
    beta: float = Field(1.0, ge=0.0, le=1.0)  # 0: forward KL, 1: reverse KL, between: generalised JSD
    max_completion_length: int = Field(512, ge=1)
    temperature: float = Field(1.0, gt=0.0)
    loss_top_k: int = Field(1, ge=1)        # server teacher: top-k logprobs it returns per token


class GoldConfig(Section):
    """Logit distillation across tokenizers (TRL GOLDTrainer, distill/train/gold.py): the teacher
    loaded beside the student scores every batch of kept traces; different vocabularies are
    aligned by bytes (ULD loss), equal ones compared token for token (generalised JSD)."""
    teacher_model: str | None = None       # local or Hub teacher (default: teacher.model)
    teacher_revision: str | None = None    # of teacher_model
    lmbda: float = Field(0.0, ge=0.0, le=1.0)  # share of batches the student samples itself; 0: traces only
    beta: float = Field(0.0, ge=0.0, le=1.0)   # JSD (equal vocabularies, uld_hybrid): 0 forward KL, 1 reverse
    temperature: float = Field(1.0, gt=0.0)    # of the JSD and of the student's samples (lmbda > 0)
    max_completion_length: int | None = Field(None, ge=1)  # tokens the student samples (lmbda > 0);
    # None: generate.max_tokens, the teacher's budget for the same prompts
    crossentropy_weight: float = Field(1.0, ge=0.0)   # ULD: + cross-entropy on the trace (ULD compares
    distillation_weight: float = Field(1.0, ge=0.0)   # sorted probabilities, not which token is right)
    student_temperature: float = Field(1.0, gt=0.0)   # ULD softmax temperatures
    teacher_temperature: float = Field(1.0, gt=0.0)
    # The next two, on the toy (bench/toy_gold_vs_sft.py): held-out 35% / 7% against 0% / 0% for
    # TRL's defaults (False, observed), which only match the sorted distributions' shapes.
    uld_hybrid: bool = True                # ULD: tokens spelt alike in both vocabularies compared by JSD
    uld_token_merge_strategy: Literal["observed", "bayesian"] = "bayesian"  # how split tokens' probabilities merge
    extended_uld: bool = True              # align by bytes (byte-level / char tokenizers); False: by position


class LaunchConfig(Section):
    """How the train stage runs. With `accelerate_config`, `distill train` (and the Prefect
    flow's train task) starts `accelerate launch --config_file <it> -m distill.cli train ...` as a
    subprocess and waits for it, so a 7B-14B student trains on every GPU of the node under the
    config's DDP / DeepSpeed ZeRO-3 / FSDP; None trains in the calling process."""
    accelerate_config: str | None = None   # e.g. configs/accelerate/zero3.yaml
    num_processes: int | None = Field(None, ge=1)  # overrides the config's num_processes
    extra_args: list[str] = []             # further `accelerate launch` flags, verbatim


class TrainConfig(Section):
    student: str                           # Hub id, local path, or toy:student
    method: Literal["sft", "logit_kd", "on_policy", "gold"] = "sft"
    adapter: Literal["none", "lora", "qlora"] = "none"  # qlora: 4-bit base (bitsandbytes, GPU only)
    learning_rate: float = Field(1e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(16384, ge=16)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    bf16: bool = False
    gradient_checkpointing: bool = False
    packing: bool = False                  # BFD packing into rows of max_length (padding-free)
    padding_free: bool = False             # no padding: a batch is one row, documents kept apart
    # (both pay off with flash / flex attention kernels; with sdpa, padded batches are faster)
    liger: bool = False                    # Liger kernels (fused linear cross-entropy; GPU)
    attn_implementation: str | None = None  # sdpa, flash_attention_2, flex_attention, ...
    save_steps: int = Field(500, ge=1)
    # Where training is tracked (distill/tracking.py): TensorBoard event files in train/tb/ by
    # default; wandb, mlflow and trackio need their package and login; none: no tracker. Filter
    # counts and eval scores go to the same trackers. Neither field changes the weights.
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio", "none"]] = ["tensorboard"]
    logging_steps: int = Field(50, ge=1)   # a loss / learning-rate point every this many steps
    # Train on part of the kept set (a sweep's data-size axis): the records first in the order
    # of a hash of (run.seed, id), so a smaller subset is inside every larger one. The share is
    # taken first, then the count.
    data_fraction: float | None = Field(None, gt=0, le=1)
    max_examples: int | None = Field(None, ge=1)
    # The student's tokens and template, as the R1-Distill models set theirs. Qwen base models
    # have EOS = pad = <|endoftext|> while their chat template ends a turn with <|im_end|>: the
    # end-of-turn token becomes the saved tokenizer's EOS and the model's stop token.
    end_of_turn_token: str | None = None   # None: the special token the template puts after the answer
    pad_token: str | None = None           # None: the tokenizer's own
    chat_template: str | None = None       # a Jinja file replacing the student's chat template
    # Positions: train.max_length past the student's max_position_embeddings is refused unless
    # the recipe raises them here (R1-Distill-Qwen-7B: 131,072 with Qwen2.5-Math's rope_theta)
    # or sets RoPE scaling (e.g. {rope_type: yarn, factor: 4.0, original_max_position_embeddings: 4096}).
    max_position_embeddings: int | None = Field(None, ge=16)
    rope_scaling: dict[str, Any] | None = None
    launch: LaunchConfig = LaunchConfig()
    lora: LoraConfig = LoraConfig()
    kd: LogitKDConfig = LogitKDConfig()
    on_policy: OnPolicyConfig = OnPolicyConfig()
    gold: GoldConfig = GoldConfig()
    revision: str | None = None

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _names(self) -> Self:
        if "none" in self.report_to and len(self.report_to) > 1:
            raise _bad("none means no tracker: give it alone, or only trackers", "report_to")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise _bad(unknown_name("scheduler", self.lr_scheduler, LR_SCHEDULERS), "lr_scheduler")
        rope = self.rope_scaling or {}
        for key in ("rope_type", "type"):   # "type": the spelling before transformers 5
            if key in rope and rope[key] not in ROPE_TYPES:
                raise _bad(unknown_name("RoPE type", rope[key], ROPE_TYPES), "rope_scaling", key)
        _check_toy_model(self.student, "student")
        _check_toy_model(self.kd.teacher_tokenizer, "kd", "teacher_tokenizer")
        _check_toy_model(self.on_policy.teacher_model, "on_policy", "teacher_model")
        _check_toy_model(self.gold.teacher_model, "gold", "teacher_model")
        if self.method == "gold":
            # GOLD aligns each trace with the teacher's tokenization by its bytes, one per row
            for flag in ("packing", "padding_free"):
                if getattr(self, flag):
                    raise _bad(f"method: gold aligns each trace with the teacher's tokens by their bytes, "
                               f"one trace per row: turn {flag} off", flag)
            if (self.gold.max_completion_length or 0) >= self.max_length:
                raise _bad(f"must be below train.max_length ({self.max_length}): the prompt needs room",
                           "gold", "max_completion_length")
        return self


class BenchmarkSettings(Section):
    """Per-benchmark settings (eval.benchmark.<name>): sampling that wins over the eval-wide
    values, and the loader's options (a LiveCodeBench release and date window, ...)."""
    samples: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    options: dict[str, Any] = {}


class EvalConfig(Section):
    """Teacher, base student and distilled student answer the same questions with the same
    sampling. Unset sampling fields take each benchmark's default (evals/<name>.py: AIME 64
    samples, MATH-500 4, ...); set here they apply to every benchmark, and
    `benchmark.<name>` wins over both."""
    benchmarks: list[str] = Field(min_length=1)
    samples: int | None = Field(None, ge=1)        # completions per question; pass@1 is their mean
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    benchmark: dict[str, BenchmarkSettings] = {}
    pass_k: list[int] = []                 # pass@k reported besides pass@1 and pass@n
    limit: int | None = None               # questions per benchmark (None: all)
    max_concurrency: int = Field(64, ge=1)
    data_files: dict[str, str] = {}        # benchmark -> local file instead of the Hub
    base_url: str | None = None            # where the students are served; None: served locally
    server: Literal["distill", "vllm"] = "distill"   # what serves a local model path
    server_args: list[str] = []            # extra arguments of that server (vllm serve ...)
    vllm_executable: str = "vllm"          # the command that starts vLLM (split like a shell word list)
    # vLLM's --max-model-len for a served model; None: the longest prompt plus the largest
    # max_tokens of the recipe's benchmarks, capped at the model's max_position_embeddings.
    max_model_len: int | None = Field(None, ge=16)
    timeout_s: float = Field(3600.0, gt=0)  # per request: a 32k-token answer on a busy server
    max_retries: int = Field(5, ge=0)
    # APIs that ignore `n` (DeepSeek's): 1. None: the teacher takes generate.max_n_per_request,
    # served models answer n samples per request.
    max_n_per_request: int | None = Field(None, ge=1)
    grade_retries: int = Field(2, ge=0)    # sandbox failures (not the answer's) graded again

    @model_validator(mode="after")
    def _benchmark_names(self) -> Self:
        names = benchmark_names()
        for i, name in enumerate(self.benchmarks):
            if name not in names:
                raise _bad(unknown_name("benchmark", name, names), "benchmarks", i)
        for name in self.benchmark:
            if name not in self.benchmarks:
                message = (f"settings for {name!r}, which is not in eval.benchmarks "
                           f"({', '.join(self.benchmarks)})" if name in names else
                           unknown_name("benchmark", name, self.benchmarks))
                raise _bad(message, "benchmark", name)
        for name in self.data_files:   # also read by filter.decontaminate: any benchmark
            if name not in names:
                raise _bad(unknown_name("benchmark", name, names), "data_files", name)
        return self


class PublishConfig(Section):
    """Cards, the Hub push and its dry run. The token is read from the environment variable
    `token_env` at push time and handed to huggingface_hub in memory, never written anywhere."""
    hub_repo: str | None = None            # the model repo, e.g. org/r1-distill-7b
    dataset_repo: str | None = None        # the kept traces (default: <hub_repo>-traces)
    adapter_repo: str | None = None        # the LoRA / QLoRA adapter on its own (train.adapter)
    push: bool = False                     # upload the staged folders to the Hub
    dry_run: bool = False                  # stage publish/hub/<repo kind>/ exactly as pushed; upload nothing
    private: bool = True                   # new repos are private until someone looks at them
    token_env: str = "HF_TOKEN"
    license: str | None = None             # None: the base model's license (its model card)
    dataset_license: str | None = None     # None: the teacher's license (the traces are its outputs)


# llama.cpp's quantization types the quantize stage can write (llama_ftype names, lower case).
GgufType = Literal["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "f16", "bf16"]


class QuantizeConfig(Section):
    """The quantize stage (distill/quantize/): the distilled student as users run it at the edge,
    each variant exported, checked (chat template, end-of-turn token, <think>, loads back, stops
    by itself) and scored on every benchmark beside the others. GGUF through llama.cpp's own
    converter and quantizer; weight-only int8/int4 checkpoints through torchao."""
    enabled: bool = False
    gguf: list[GgufType] = ["q8_0", "q4_k_m"]
    torchao: list[Literal["int8", "int4"]] = ["int8", "int4"]
    # Where publish puts the GGUF files: the model repo, or <hub_repo>-GGUF (the ecosystem's
    # two conventions).
    gguf_repo: Literal["model", "separate"] = "model"
    # The stop-by-itself check: this question, answered greedily, within probe_max_tokens.
    probe: str = "What is 12+34?"
    probe_max_tokens: int = Field(512, ge=8)
    bench_tokens: int = Field(128, ge=8)       # tokens generated to time CPU tokens/s
    threads: int | None = Field(None, ge=1)    # CPU threads for llama.cpp (None: all usable)


class RefreshConfig(Section):
    """A refresh (`distill refresh`, Prefect `refresh/<recipe>`) adds new prompts, generates
    only for them and re-filters everything; it retrains and re-evaluates only when the kept
    set grew by at least `min_new_kept` traces and `min_growth` of its size at the last
    training, or (with `retrain_on_removal`) when re-filtering removed traces the current
    student was trained on, e.g. ones found in a benchmark added since."""
    min_new_kept: int = Field(1, ge=1)
    min_growth: float = Field(0.0, ge=0.0)
    retrain_on_removal: bool = True


class PlanConfig(Section):
    """Sizing and cost assumptions for `distill plan` and the report's economics section. Left
    unset, throughputs and the mean completion length come from a run when there is one."""
    teacher_config: str | None = None      # a local config.json instead of teacher.model's
    student_config: str | None = None      # a local config.json instead of train.student's
    hardware: Literal["H100", "H200", "MI300X", "cpu"] = "H200"  # where models are served, for $
    hourly_usd: float | None = Field(None, ge=0)  # $ per GPU-hour (per machine-hour for cpu)
    teacher_gpus: int | None = Field(None, ge=1)  # None: the plan's layout on `hardware`
    teacher_tokens_per_s: float | None = Field(None, gt=0)  # output tokens/s, whole deployment
    student_tokens_per_s: float | None = Field(None, gt=0)  # output tokens/s, one replica
    prompt_tokens: int = Field(512, ge=1)  # mean prompt length
    max_prompt_tokens: int = Field(8192, ge=1)  # --max-model-len = this + generate.max_tokens
    completion_tokens: int | None = Field(None, ge=1)  # mean; None: measured, else max_tokens / 2
    weights_dtype: Literal["auto", "bf16", "fp8", "int4"] = "auto"  # auto: the checkpoint's own
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    measure_throughput: bool = False       # local models: the report times a batched generation


class SweepConfig(Section):
    """`distill sweep` and the Prefect flow `distill-sweep`: one variant of this recipe per
    combination of the values in `over` (a grid), each a run directory, sharing the stages
    their values leave equal (distill/sweep/)."""
    over: dict[str, list[Any]] = {}        # dotted key -> values; `--over KEY=V1,V2` adds to it
    reference: str | None = None           # the variant the map compares against (default: first)
    concurrency: int = Field(1, ge=1)      # variants whose stages run at once
    task_runner: Literal["threads", "ray"] = "threads"  # the flow's; ray: prefect-ray's RayTaskRunner
    ray_address: str | None = None         # an existing Ray cluster (None: a local one)
    # torch threads of each variant's process; None: this machine's cores / concurrency
    threads_per_variant: int | None = Field(None, ge=1)

    @field_validator("over")
    @classmethod
    def _values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise _bad("no values to sweep over", key)
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise _bad("a value is given twice", key)
        return value


class Recipe(Section):
    run: RunConfig
    prompts: PromptsConfig
    teacher: TeacherConfig
    generate: GenerateConfig = GenerateConfig()
    filter: FilterConfig = FilterConfig()
    train: TrainConfig
    eval: EvalConfig
    quantize: QuantizeConfig = QuantizeConfig()
    publish: PublishConfig = PublishConfig()
    plan: PlanConfig = PlanConfig()
    refresh: RefreshConfig = RefreshConfig()
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _caps_fit_the_teacher(self) -> Self:
        g, backend = self.generate, self.teacher.backend
        if backend == "vllm_offline" and (g.max_usd is not None or g.max_gpu_hours is not None):
            key = "max_usd" if g.max_usd is not None else "max_gpu_hours"
            raise _bad("the spend cap is checked before each request over HTTP; the offline engine "
                       "runs its requests in batches: use teacher.backend vllm_serve", "generate", key)
        if g.max_gpu_hours is not None and backend != "vllm_serve":
            raise _bad("max_gpu_hours counts the GPU time of a vllm serve distill starts "
                       "(teacher.backend: vllm_serve); a teacher at an endpoint is paid for there: "
                       "cap it with max_usd at its prices", "generate", "max_gpu_hours")
        return self

    def generation_hash(self) -> str:
        """What makes two teacher samples comparable: the teacher and the sampling settings.
        Concurrency, limits, timeouts, prices, the backend and the endpoint's address are left
        out on purpose: changing them must not throw away finished samples."""
        g = self.generate
        data: dict[str, Any] = {"model": self.teacher.model, "revision": self.teacher.revision,
                "temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens,
                "top_logprobs": g.top_logprobs}
        # Added later: in the hash only when set, so existing samples keep their keys.
        if g.seed is not None:
            data["seed"] = g.seed
        if g.extra_body:
            data["extra_body"] = g.extra_body
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def section_hash(self, *sections: str) -> str:
        """A short hash of some sections: a stage's outputs are keyed by what it depends on."""
        data = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------- loading

class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line of every mapping key, for error messages."""

    key_lines: dict[int, dict[Any, int]]


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mapping[key] = loader.construct_object(value_node, deep=True)
        lines[key] = key_node.start_mark.line + 1
    loader.key_lines[id(mapping)] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    """Returns the document and a map from key path (tuple) to its line number."""
    if not path.is_file():
        raise InputError("recipe file not found", file=str(path))
    text = path.read_text()
    loader = _LineLoader(text)
    loader.key_lines = {}
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"malformed YAML: {problem}", file=str(path),
                         line=mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()
    if not isinstance(doc, dict):
        raise InputError("a recipe must be a YAML mapping of sections", file=str(path))
    lines: dict[tuple[Any, ...], int] = {}

    def walk(obj: Any, prefix: tuple[Any, ...]) -> None:
        if isinstance(obj, dict):
            for k, line in loader.key_lines.get(id(obj), {}).items():
                lines[prefix + (k,)] = line
            for k, v in obj.items():
                walk(v, prefix + (k,))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, prefix + (i,))

    walk(doc, ())
    return doc, lines


def _apply_override(doc: dict[str, Any], override: str) -> tuple[Any, ...]:
    if "=" not in override:
        raise InputError(f"override {override!r} must look like key.path=value", key=override)
    dotted, raw = override.split("=", 1)
    keys: list[Any] = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: Any = doc
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise InputError("no such list item", key=".".join(keys[: i + 1]))
            keys[i] = int(k)
            node = node[int(k)]
        else:
            node = node.setdefault(k, {})
            if not isinstance(node, (dict, list)):
                raise InputError("is not a section", key=".".join(keys[: i + 1]))
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise InputError("no such list item", key=dotted)
        node[int(last)] = value
    else:
        node[last] = value
    return tuple(keys)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    doc, lines = _load_yaml(path)
    overridden = {_apply_override(doc, o) for o in overrides or []}
    try:
        return Recipe.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"]) + tuple((err.get("ctx") or {}).get("at", ()))
        key = ".".join(str(p) for p in loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "literal_error":   # name the value given, not only the choices
            choices = re.findall(r"'([^']*)'", err["ctx"]["expected"])
            msg = unknown_name("value", err["input"], choices)
        given = next((loc[:i] for i in range(len(loc), 0, -1) if loc[:i] in overridden), None)
        if given:
            raise InputError(f"{msg} (from -o {'.'.join(map(str, given))}=...)", file=str(path),
                             key=key) from None
        # The line of the deepest key that exists in the file (a missing key has none).
        line = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)
        raise InputError(msg, file=str(path), key=key, line=line) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def recipe_path(name_or_path: str) -> Path:
    """A recipe file, or the name of one in configs/ (`smoke`, `r1-to-7b`)."""
    path = Path(name_or_path)
    if not path.exists() and (CONFIG_DIR / f"{name_or_path}.yaml").exists():
        return CONFIG_DIR / f"{name_or_path}.yaml"
    return path


def default_run_dir(cfg: Recipe) -> Path:
    return Path("runs") / cfg.run.name
