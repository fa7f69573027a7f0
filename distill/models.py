"""The one place a model name becomes something to load: `toy:` names resolve to the toy
world's local directories (built or trained once, cached), a missing local path is an error
naming it, and anything else (a Hub id) is returned unchanged. `is_toy` says whether a name is
one of the toy world's models (local, never on the Hub); `toy_config` and `toy_version` are a
toy model's config.json and what its weights depend on. `meta_model` builds a config's model
without memory, for counting (distill.plan, distill.train.memory)."""

from __future__ import annotations

import os
from typing import Any

from distill.errors import InputError

TOY_PREFIX = "toy:"


def is_toy(model: str) -> bool:
    """A model of the toy world (`toy:teacher`, `toy:teacher-bpe`, `toy:student`): built locally,
    not on the Hub."""
    return model.startswith(TOY_PREFIX)


def resolve_model(model: str, *, key: str | None = "teacher.model", check: bool = True) -> str:
    """`toy:...` names become local model directories; anything else is returned unchanged.
    `check`: an absolute or ./ path that does not exist is an InputError (under `key`); without
    it, it is returned as it is (a model that was there once, such as one a lineage names)."""
    if not is_toy(model):
        # An absolute or ./ path that is missing is a typo, not a Hub id: say so before a
        # server spends its start-up on it.
        if check and (os.path.isabs(model) or model.startswith(".")) and not os.path.exists(model):
            raise InputError("model directory not found", key=key, file=model)
        return model
    from distill.toy import resolve_model as toy_model
    return toy_model(model)


def toy_config(model: str) -> dict[str, Any]:
    """The config.json of a toy model, from its architecture (nothing trained)."""
    from distill.toy.arch import build_student, build_teacher
    name = model.removeprefix(TOY_PREFIX)
    if name == "teacher-bpe":
        from distill.toy.bpe import build_bpe_tokenizer
        built, _ = build_teacher(tokenizer=build_bpe_tokenizer())
    else:
        built, _ = build_teacher() if name == "teacher" else build_student(name=name)
    config: dict[str, Any] = built.config.to_dict()
    return config


def toy_version(model: str) -> str:
    """What a toy model's weights depend on (its config, training and the code they came
    from): a change to any of them is another version."""
    from distill.toy.models import model_key
    return model_key(model.removeprefix(TOY_PREFIX))


def meta_model(config: Any) -> Any:
    """The causal LM of `config` built on the meta device: every parameter with its shape and
    none of its memory (a 671B model builds in about a second). distill.plan counts MoE
    teachers on it too."""
    import torch
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
