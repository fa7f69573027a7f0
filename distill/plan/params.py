"""Parameter counts of a causal LM from its config.json: the total, and what one token uses.

Reads a config.json (a local file or model directory, the local Hugging Face cache, the copies
of published configs shipped in distill/plan/hub/, or the Hub), writes nothing.

A Mixture-of-Experts model's memory follows its total parameters and its compute its active
ones: every token passes through the attention, the dense layers, the shared experts, the
router and the top-k of the routed experts of each MoE layer, and skips the other routed
experts. The total is counted exactly by building the model on the meta device
(`distill.models.meta_model`, no memory); the routed experts are the parameters under
`.experts.` (transformers keeps them as one (num_experts, ...) tensor per layer), of which a
token uses top_k / num_experts. Where transformers lacks the architecture, `closed_form`
counts the known families from the config alone; tests check that both agree.

Published "active" figures differ in what they count: Qwen and Mistral include the embedding
table (Mixtral's 12.9B, Qwen3-30B-A3B's 3.3B), OpenAI counts only the unembedding (gpt-oss-120b's
5.13B). `Params.active` includes both tables; `Params.matmul` leaves out the input embedding
(a table lookup, no FLOPs) and is what FLOPs per token follow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from distill.errors import InputError
from distill.models import is_toy, toy_config

HUB_COPIES = Path(__file__).parent / "hub"

# Bytes per parameter of the weight formats a checkpoint ships in or vLLM serves.
#   fp8: one byte plus a float32 scale per 128 x 128 block (DeepSeek's layout)
#   int4: AWQ / GPTQ with a bf16 scale and a 4-bit zero point per group of 128
#   mxfp4: gpt-oss's experts: 4-bit values with an 8-bit scale per block of 32
BYTES = {"bf16": 2.0, "fp8": 1.0 + 4 / 128**2, "int4": 0.5 + 2.5 / 128, "mxfp4": 4.25 / 8}


@dataclass(frozen=True)
class Arch:
    """The shape of a decoder, as the plan needs it (config.json fields, normalised over the
    families' names for the same thing)."""
    name: str
    source: str                 # where the config came from
    model_type: str
    layers: int
    hidden: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    kv_lora_rank: int           # MLA (DeepSeek-V2/V3): the compressed KV latent; 0 otherwise
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    sliding_window: int | None  # tokens a sliding-window layer attends to
    sliding_layers: int         # how many layers use the window
    num_experts: int            # routed experts per MoE layer (0: dense)
    top_k: int
    max_positions: int
    tied: bool
    checkpoint: str             # weight format of the checkpoint: bf16, fp8, mxfp4, int4

    @property
    def moe(self) -> bool:
        return self.num_experts > 0

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0


@dataclass(frozen=True)
class Params:
    total: int
    active: int                 # used by one token: everything but the routed experts skipped
    embedding: int              # the input embedding table
    lm_head: int                # the output projection; 0 when tied to the embedding
    experts: int                # all routed expert parameters
    active_experts: int         # the routed expert parameters one token uses
    method: str                 # "meta" (transformers on the meta device) or "closed-form"

    @property
    def matmul(self) -> int:
        """Active parameters that multiply: all but the input-embedding lookup (a tied table
        still multiplies, as the output projection)."""
        return self.active - (self.embedding if self.lm_head else 0)

    @property
    def non_expert(self) -> int:
        return self.total - self.experts


# ------------------------------------------------------------------------------ loading

# API model names and the published model whose architecture they serve: sizing and cost of
# a run through DeepSeek's API follow the open weights of the same architecture.
API_MODELS = {"deepseek-reasoner": "deepseek-ai/DeepSeek-R1", "deepseek-chat": "deepseek-ai/DeepSeek-V3"}


def _hub_copy(name: str) -> Path:
    return HUB_COPIES / (name.replace("/", "--") + ".json")


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg})", file=str(path), line=e.lineno) from None
    if not isinstance(doc, dict):
        raise InputError("a config.json must be a JSON object", file=str(path))
    return doc


def load_config(name: str, revision: str | None = None) -> tuple[dict, str]:
    """The config.json of `name` and where it came from. A path is read as it is; a Hub id is
    looked up in the local Hugging Face cache, then in distill's copies of published configs,
    then on the Hub (a revision goes to the Hub first: the copies are of the main branch)."""
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise InputError("no config.json in the model directory", file=str(path.parent))
    if path.is_file():
        return _read_json(path), str(path)
    if is_toy(name):
        return toy_config(name), f"{name} (distill.toy.models)"
    if path.is_absolute() or name.startswith("."):
        raise InputError("config file not found", file=name)
    if name in API_MODELS:
        config, source = load_config(API_MODELS[name], revision)
        return config, f"{name}: the architecture of {source}"
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(cached, str):
        return _read_json(Path(cached)), f"{name} (Hugging Face cache)"
    copy = _hub_copy(name)
    if copy.is_file() and revision is None:
        return _read_json(copy), f"{name} (published config.json, copy in {copy.parent.name}/)"
    try:
        return _read_json(Path(hf_hub_download(name, "config.json", revision=revision))), f"{name} (Hub)"
    except Exception as e:  # offline, gated, or no such repository
        if copy.is_file():
            return _read_json(copy), f"{name} (published config.json; the Hub: {type(e).__name__})"
        raise InputError(f"cannot read config.json of {name} from the Hub ({type(e).__name__}); "
                         "pass a local config.json (plan.teacher_config / plan.student_config or "
                         "--teacher-config / --student-config)", key=name) from None


# ------------------------------------------------------------------------------- shapes

def _first(cfg: dict, *keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _checkpoint_format(cfg: dict) -> str:
    q = cfg.get("quantization_config") or {}
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        return "fp8"
    if method == "mxfp4":
        return "mxfp4"
    if method in ("awq", "gptq", "compressed-tensors") and q.get("bits", 4) == 4:
        return "int4"
    return "bf16"


def arch_of(cfg: dict, name: str = "", source: str = "") -> Arch:
    """The normalised shape of a config dict (a multimodal config: its text part)."""
    cfg = cfg.get("text_config") or cfg
    try:
        layers, hidden, vocab = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
        heads = cfg["num_attention_heads"]
    except KeyError as e:
        raise InputError("missing from config.json", file=source or name, key=e.args[0]) from None
    kv_heads = _first(cfg, "num_key_value_heads", default=heads)
    head_dim = _first(cfg, "head_dim", default=hidden // heads)
    types = cfg.get("layer_types") or []
    window = cfg.get("sliding_window")
    if types:
        sliding = sum(t == "sliding_attention" for t in types)
    elif window and cfg.get("use_sliding_window", True) and cfg.get("model_type") != "qwen2":
        sliding = layers  # Mistral-style: every layer slides
    else:
        sliding = 0
    experts = _first(cfg, "n_routed_experts", "num_experts", "num_local_experts", default=0) or 0
    return Arch(
        name=name, source=source, model_type=cfg.get("model_type", "?"), layers=layers,
        hidden=hidden, vocab=vocab, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        kv_lora_rank=cfg.get("kv_lora_rank") or 0, qk_rope_head_dim=cfg.get("qk_rope_head_dim") or 0,
        qk_nope_head_dim=cfg.get("qk_nope_head_dim") or 0, v_head_dim=cfg.get("v_head_dim") or 0,
        sliding_window=window if sliding else None, sliding_layers=sliding, num_experts=experts,
        top_k=_first(cfg, "num_experts_per_tok", "experts_per_token", default=0) if experts else 0,
        max_positions=cfg.get("max_position_embeddings") or 0,
        tied=bool(cfg.get("tie_word_embeddings", False)), checkpoint=_checkpoint_format(cfg))


# ------------------------------------------------------------------------------ counting

def _transformers_config(cfg: dict):
    from transformers import CONFIG_MAPPING
    # auto_map points at remote code, quantization_config at a loader: neither changes shapes.
    clean = {k: v for k, v in cfg.items() if k not in ("auto_map", "quantization_config")}
    return CONFIG_MAPPING[cfg["model_type"]].from_dict(clean)


def count_meta(cfg: dict) -> Params:
    """Exact counts from the model built on the meta device."""
    from distill.models import meta_model
    a = arch_of(cfg)
    model = meta_model(_transformers_config(cfg))
    total = experts = embedding = lm_head = 0
    for name, p in model.named_parameters():  # tied weights are yielded once
        n = p.numel()
        total += n
        if ".experts." in name and "shared" not in name:
            experts += n
        elif name.endswith("embed_tokens.weight"):
            embedding += n
        elif name.startswith("lm_head."):
            lm_head += n
    active_experts = experts * a.top_k // a.num_experts if a.moe else 0
    return Params(total, total - experts + active_experts, embedding, lm_head, experts,
                  active_experts, "meta")


def _moe_layer(cfg: dict, i: int) -> bool:
    if cfg.get("model_type") in ("deepseek_v2", "deepseek_v3", "kimi_k2"):
        return i >= cfg.get("first_k_dense_replace", 0) and i % cfg.get("moe_layer_freq", 1) == 0
    if i in (cfg.get("mlp_only_layers") or []):
        return False
    return (i + 1) % (cfg.get("decoder_sparse_step") or 1) == 0


def closed_form(cfg: dict) -> Params:
    """Counts from the config alone for the families the plan knows (Llama / Qwen2 / Qwen3 /
    Mistral dense, Qwen3-MoE, Mixtral, gpt-oss, DeepSeek-V2/V3): the fallback where the
    installed transformers lacks the architecture."""
    a = arch_of(cfg)
    mt, h = a.model_type, a.hidden
    if mt not in ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "gpt_oss",
                  "deepseek_v2", "deepseek_v3", "kimi_k2"):
        raise InputError(f"no parameter count for model_type {mt!r}: the installed transformers "
                         "does not know it and distill has no closed form for it", key="model_type")
    gpt_oss = mt == "gpt_oss"
    if a.mla:
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q_rank = cfg.get("q_lora_rank")
        q = h * a.heads * qk if not q_rank else h * q_rank + q_rank + q_rank * a.heads * qk
        attn = (q + h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
                + a.kv_lora_rank * a.heads * (a.qk_nope_head_dim + a.v_head_dim)
                + a.heads * a.v_head_dim * h)
    else:
        q, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
        attn = h * (q + 2 * kv) + q * h
        if mt == "qwen2" or cfg.get("attention_bias"):
            attn += q + 2 * kv                      # q, k, v biases
        if gpt_oss:
            attn += h + a.heads                     # o_proj bias, attention sinks
        if mt in ("qwen3", "qwen3_moe"):
            attn += 2 * a.head_dim                  # q_norm, k_norm
    dense_ffn = 3 * h * cfg.get("intermediate_size", 0)
    expert_ffn = 3 * h * _first(cfg, "moe_intermediate_size", "intermediate_size", default=0)
    if gpt_oss:
        expert_ffn += 2 * cfg["intermediate_size"] + h  # gate_up and down biases
    # gpt-oss's router has a bias; DeepSeek-V3's per-expert score bias is a buffer in
    # transformers, not a parameter, and is left out here too (256 values a layer).
    router = a.num_experts * h + (a.num_experts if gpt_oss else 0)
    shared = expert_ffn * (cfg.get("n_shared_experts") or 0) if a.mla else 0
    total = active = 0
    experts = active_experts = 0
    for i in range(a.layers):
        layer = attn + 2 * h                        # attention and its two norms
        if a.moe and _moe_layer(cfg, i):
            layer += router + shared
            experts += a.num_experts * expert_ffn
            active_experts += a.top_k * expert_ffn
        else:
            layer += dense_ffn
        total += layer
    embedding = a.vocab * h
    lm_head = 0 if a.tied else a.vocab * h
    total += experts + embedding + lm_head + h     # + the final norm
    active = total - experts + active_experts
    return Params(total, active, embedding, lm_head, experts, active_experts, "closed-form")


@lru_cache(maxsize=64)
def _count(blob: str) -> Params:
    cfg = json.loads(blob)
    try:
        _transformers_config(cfg)
    except (KeyError, ValueError):  # an architecture this transformers does not know
        return closed_form(cfg)
    return count_meta(cfg)


def count(cfg: dict) -> Params:
    """Exact counts: on the meta device where transformers has the architecture, else from
    the closed form."""
    return _count(json.dumps(cfg.get("text_config") or cfg, sort_keys=True))


def describe(name: str, revision: str | None = None, path: str | None = None) -> tuple[Arch, Params]:
    """The shape and the counts of a model, from `path` (a config.json) when given, else from
    `name` (a Hub id, a directory or a toy: name)."""
    cfg, source = load_config(path or name, revision)
    return arch_of(cfg, name, source), count(cfg)
