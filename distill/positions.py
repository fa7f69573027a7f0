"""The student's positions against train.max_length: reads the train section and the student's
config.json; returns what train does (`positions`) and applies it to the config before the
weights load (`apply_positions`).

Qwen2.5-Math-1.5B/7B ship max_position_embeddings 4,096 while the R1 recipes train at 16,384
tokens: positions the base never saw. Train refuses that unless the recipe raises the positions
(`train.max_position_embeddings`, as DeepSeek's R1-Distill-Qwen-1.5B/7B ship 131,072 with the same
rope_theta 10,000) or scales RoPE (`train.rope_scaling`, e.g. YaRN with factor x original >=
max_length). The trained model is saved with the raised setting, so servers admit long traces.
"""

from __future__ import annotations

from typing import Any

from distill.errors import InputError


def _scaled(rope: dict[str, Any], model: int | None) -> int | None:
    factor, original = rope.get("factor"), rope.get("original_max_position_embeddings") or model
    if not isinstance(factor, (int, float)) or factor < 1:
        raise InputError(f"train.rope_scaling needs a numeric factor >= 1 (got {factor!r})",
                         key="train.rope_scaling")
    if not (rope.get("rope_type") or rope.get("type")):
        raise InputError("train.rope_scaling needs rope_type (e.g. yarn, linear, dynamic)",
                         key="train.rope_scaling")
    return int(factor * original) if original else None


def positions(t, model: int | None, student: str) -> dict:
    """{"model": the student's max_position_embeddings, "trained": the positions the trained
    model has, "rope_scaling": the recipe's or None}. Raises InputError, naming both numbers and
    the keys, when train.max_length does not fit."""
    trained = model
    if t.rope_scaling:
        trained = _scaled(t.rope_scaling, model) or trained
    if t.max_position_embeddings:
        trained = t.max_position_embeddings
    out = {"model": model, "trained": trained, "rope_scaling": t.rope_scaling}
    if trained is None or t.max_length <= trained:
        return out
    if t.max_position_embeddings:
        why = f"train.max_position_embeddings {trained:,}"
    elif t.rope_scaling:
        why = f"train.rope_scaling (factor x original_max_position_embeddings = {trained:,})"
    else:
        why = (f"the max_position_embeddings {model:,} of {student!r} (config.json), positions it never "
               "saw; raise them with train.max_position_embeddings (DeepSeek's R1-Distill-Qwen-7B ships "
               "131,072 on the same base) or scale RoPE with train.rope_scaling, each >= train.max_length")
    raise InputError(f"train.max_length {t.max_length:,} is past {why}", key="train.max_length")


def apply_positions(config, pos: dict) -> None:
    """Writes the recipe's positions into the student's config (before the weights load).
    transformers 5 keeps RoPE settings in `rope_parameters` (rope_type, rope_theta, factor, ...;
    a config.json's `rope_scaling` is read into it), so the scaling is merged there, and
    max_position_embeddings becomes the trained length (YaRN checks factor against it)."""
    text = config.get_text_config()
    if pos["rope_scaling"]:
        scaling = dict(pos["rope_scaling"])
        if "type" in scaling:  # the pre-5 spelling
            scaling.setdefault("rope_type", scaling.pop("type"))
        scaling.setdefault("original_max_position_embeddings", pos["model"])
        text.rope_parameters = {**(getattr(text, "rope_parameters", None) or {}), **scaling}
    if pos["trained"] is not None and pos["trained"] != pos["model"]:
        text.max_position_embeddings = pos["trained"]
