"""Training-memory estimates, and the figures the shipped recipes quote from them."""

from __future__ import annotations

import re

import pytest

from distill.config import recipe_path
from distill.train.memory import (QWEN3_8B, QWEN25_7B, QWEN25_14B, QWEN25_15B, Dense, lora_params,
                                  training_gib)


def test_full_fine_tuning_state_is_16_bytes_per_parameter_sharded():
    m = Dense(1e9, 10, 1000, 4000, 1000)
    one = training_gib(m, tokens=1, liger=True)
    eight = training_gib(m, tokens=1, gpus=8, sharded=True, liger=True)
    assert one["weights_grads_optimizer"] == pytest.approx(16e9 / 2**30, abs=0.1)
    assert eight["weights_grads_optimizer"] == pytest.approx(one["weights_grads_optimizer"] / 8, abs=0.1)
    # logits: 10 bytes per token per vocabulary entry unless Liger chunks the loss
    assert training_gib(m, tokens=2**20)["logits"] == pytest.approx(2**20 * 1000 * 10 / 2**30, abs=0.1)
    # checkpointing keeps one layer's activations instead of all
    assert training_gib(m, tokens=4096, checkpointing=False)["activations"] > \
        3 * training_gib(m, tokens=4096)["activations"]


def test_lora_keeps_the_base_frozen_at_two_bytes_and_qlora_at_half_a_byte():
    lora = training_gib(QWEN25_14B, tokens=1, adapter="lora", lora_r=64, liger=True)
    qlora = training_gib(QWEN25_14B, tokens=1, adapter="qlora", lora_r=64, liger=True)
    adapter = 16 * lora_params(QWEN25_14B, 64) / 2**30
    assert lora["weights_grads_optimizer"] == pytest.approx(2 * 14.77e9 / 2**30 + adapter, abs=0.1)
    assert qlora["weights_grads_optimizer"] == pytest.approx(0.5 * 14.77e9 / 2**30 + adapter, abs=0.1)


@pytest.mark.parametrize("recipe, model, kwargs", [
    ("r1-to-1.5b", QWEN25_15B, dict(tokens=16384, liger=True)),
    ("r1-to-7b", QWEN25_7B, dict(tokens=16384, gpus=8, sharded=True, liger=True)),
    ("r1-to-14b", QWEN25_14B, dict(tokens=16384, adapter="lora", lora_r=64, liger=True)),
    ("qwen3-moe-to-8b", QWEN3_8B, dict(tokens=16384, gpus=8, sharded=True, liger=True)),
])
def test_recipes_quote_the_estimate_for_their_own_settings(recipe, model, kwargs):
    from distill.config import load_recipe
    cfg = load_recipe(recipe_path(recipe))
    t = cfg.train
    assert t.batch_size * t.max_length == kwargs["tokens"] and t.liger and t.gradient_checkpointing
    assert t.adapter == kwargs.get("adapter", "none")
    total = training_gib(model, **kwargs)["total"]
    quoted = re.findall(r"= ~(\d+) GiB", recipe_path(recipe).read_text())
    assert quoted and int(quoted[0]) == round(total), (quoted, total)


def test_parameters_are_counted_exactly_from_the_config():
    from transformers import Qwen2Config
    cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                      num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True)
    from distill.train.memory import dense_from_config
    m = dense_from_config(cfg)
    assert m.params == pytest.approx(1.54e9, rel=0.01)  # Qwen2.5-1.5B as published
    assert (m.layers, m.hidden, m.ffn, m.vocab) == (28, 1536, 8960, 151936)


def test_preflight_names_what_to_change_when_it_does_not_fit():
    from transformers import Qwen2Config

    from distill.config import load_recipe
    from distill.train.memory import preflight
    qwen7b = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False)
    t = load_recipe(recipe_path("r1-to-7b"), ["train.liger=false", "train.batch_size=2"]).train
    est, problem = preflight(t, qwen7b, capacity_gib=80)  # one 80 GB GPU, nothing sharded
    assert problem and "train.liger: true" in problem and "ZeRO-3 or FSDP" in problem
    assert "train.batch_size: 1" in problem and f"~{est['total']} GiB" in problem
    fits, none = preflight(load_recipe(recipe_path("r1-to-7b")).train, qwen7b, 80, gpus=8, sharded=True)
    assert none is None and fits["total"] < 30
