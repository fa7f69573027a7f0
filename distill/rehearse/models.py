"""Stand-in students for a rehearsal: reads a model's real config.json (distill/plan/hub/, the
Hugging Face cache or the Hub) and its real tokenizer, writes a model directory with the same
architecture, vocabulary, RoPE settings, positions and special tokens, shrunk to a tiny width
and depth, with random weights.

Such a model trains, saves, serves and is graded exactly like the real one (the embedding and
output tables keep their full vocabulary rows, so a tokenizer or an end-of-turn token that does
not fit fails the same way), but in seconds on a CPU; what it writes is noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

# The shape a stand-in keeps small: what makes the model cost memory and time.
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
# MoE fields, shrunk too when a recipe's student is a Mixture-of-Experts model.
TINY_MOE = {"moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2,
            "n_routed_experts": 4, "shared_expert_intermediate_size": 32}


def tiny_config(config: dict) -> dict:
    """The config with its size fields shrunk; everything else (vocab_size, rope_theta,
    max_position_embeddings, token ids, sliding-window settings, tie_word_embeddings) kept."""
    out = dict(config)
    for k, v in TINY.items():
        if k in out or k in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
            out[k] = v
    out["head_dim"] = TINY["head_dim"]
    for k, v in TINY_MOE.items():
        if k in out:
            out[k] = v
    if "max_window_layers" in out:
        out["max_window_layers"] = min(out["max_window_layers"], TINY["num_hidden_layers"])
    if "layer_types" in out:   # per-layer attention kinds (newer configs): keep the first ones
        out["layer_types"] = list(out["layer_types"])[: TINY["num_hidden_layers"]]
    out.pop("quantization_config", None)
    out["torch_dtype"] = "float32"
    return out


def _cache_root() -> Path:
    return Path(os.environ.get("DISTILL_CACHE") or "~/.cache/distill").expanduser() / "rehearsal"


def build_tiny(model: str, tokenizer: str, out: Path | None = None, seed: int = 0,
               revision: str | None = None) -> Path:
    """A tiny random-init copy of `model` (a Hub id or a path) with `tokenizer` (a folder or Hub
    id) saved beside it. Cached by config, tokenizer and seed under $DISTILL_CACHE/rehearsal/;
    written into a temp dir renamed into place, so a crash leaves no half model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from distill.plan.params import load_config

    config, source = load_config(model, revision)
    small = tiny_config(config)
    tok = AutoTokenizer.from_pretrained(tokenizer)
    tok_files = sorted(str(p) for p in Path(tokenizer).glob("*")) if Path(tokenizer).is_dir() else [tokenizer]
    key = hashlib.sha256(json.dumps([small, seed, tok_files,
                                     tok.chat_template, len(tok)], sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    final = Path(out) if out else _cache_root() / "models" / f"{model.replace('/', '--')}-tiny-{key}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        cfg = AutoConfig.for_model(small.pop("model_type"), **{
            k: v for k, v in small.items() if k not in ("architectures", "transformers_version",
                                                         "_name_or_path", "auto_map")})
        cfg.architectures = config.get("architectures")
        torch.manual_seed(seed)
        net = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        net.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "STAND-IN.md").write_text(
            f"# A rehearsal stand-in of {model}\n\nThe architecture, vocabulary ({config.get('vocab_size')} "
            f"rows), RoPE settings, positions ({config.get('max_position_embeddings')}) and special "
            f"tokens of {model} (config from {source}), shrunk to {TINY['num_hidden_layers']} layers "
            f"of width {TINY['hidden_size']}, random weights (seed {seed}); tokenizer from "
            f"{tokenizer}. It writes noise: it exists to exercise the pipeline, not to be used.\n")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
