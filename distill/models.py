"""The one place a model name becomes something to load: `toy:` names resolve to the toy
world's local directories (built or trained once, cached), a missing local path is an error
naming it, and anything else (a Hub id) is returned unchanged. `meta_model` builds a config's
model without memory, for counting (distill.plan, distill.train.memory)."""

from __future__ import annotations

import os

from distill.errors import InputError


def resolve_model(model: str) -> str:
    """`toy:...` names become local model directories; anything else is returned unchanged."""
    if not model.startswith("toy:"):
        # An absolute or ./ path that is missing is a typo, not a Hub id: say so before a
        # server spends its start-up on it.
        if (os.path.isabs(model) or model.startswith(".")) and not os.path.exists(model):
            raise InputError("model directory not found", key="teacher.model", file=model)
        return model
    from distill.toy import resolve_model as toy_model
    return toy_model(model)


def meta_model(config):
    """The causal LM of `config` built on the meta device: every parameter with its shape and
    none of its memory (a 671B model builds in about a second). distill.plan counts MoE
    teachers on it too."""
    import torch
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
