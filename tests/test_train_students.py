"""The shipped recipes' students as train meets them: their REAL tokenizers and chat templates
(../shared/data/tokenizers), their real config.json (distill/plan/hub) at tiny width, and the
recipes' train settings: end-of-turn and pad tokens, the assistant mask, positions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.errors import InputError
from distill.config import recipe_path
from distill.records import RunDir, record_id
from distill.toy.tasks import make_tasks
from distill.train import run_train

TOKENIZERS = Path(__file__).parents[1].parent / "shared" / "data" / "tokenizers"
HUB = Path(__file__).parents[1] / "distill" / "plan" / "hub"

# recipe -> (student folder, embedding rows of its config.json, positions after training)
RECIPES = {
    "r1-to-1.5b": ("Qwen2.5-Math-1.5B", 151_936, 40_960),
    "r1-to-7b": ("Qwen2.5-Math-7B", 152_064, 40_960),
    "r1-to-14b": ("Qwen2.5-14B", 152_064, 131_072),
    "qwen3-moe-to-8b": ("Qwen3-8B-Base", 151_936, 40_960),
}
IM_END, ENDOFTEXT = 151_645, 151_643
# the probe conversation of distill.chat
PROBE = [{"role": "user", "content": "What is 17+25?"},
         {"role": "assistant", "content": "<think>REASONING-PROBE 17+25</think>ANSWER-PROBE 42"}]
PROBE_REASONING, PROBE_ANSWER = "REASONING-PROBE 17+25", "ANSWER-PROBE 42"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _train_section(recipe: str, **overrides):
    cfg = load_recipe(recipe_path(recipe))
    return cfg.train.model_copy(update=overrides)


@pytest.mark.parametrize("name", ["Qwen2.5-Math-1.5B", "Qwen2.5-Math-7B", "Qwen2.5-14B", "Qwen3-8B-Base"])
def test_trl_knows_none_of_the_base_students_templates(name):
    """Why the mask is taken from the student's own template: TRL's training templates are
    matched by exact string, and no base student's template is among them."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import get_training_chat_template
    with pytest.raises(Exception, match="not training-compatible|not supported|unknown"):
        get_training_chat_template(AutoTokenizer.from_pretrained(TOKENIZERS / name))


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_student_passes_the_checks_with_its_recipe_settings(recipe):
    from distill.chat import prepare_tokenizer
    folder = RECIPES[recipe][0]
    t = _train_section(recipe)
    assert t.end_of_turn_token == "<|im_end|>" and t.pad_token == "<|endoftext|>"
    tok, stop_ids = prepare_tokenizer(t, str(TOKENIZERS / folder))
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert stop_ids == [IM_END, ENDOFTEXT]
    # the same without the recipe's token: <|im_end|> is what the template writes after a turn
    detected, _ = prepare_tokenizer(_train_section(recipe, end_of_turn_token=None), str(TOKENIZERS / folder))
    assert detected.eos_token == "<|im_end|>"


@pytest.mark.parametrize("folder, completion", [
    ("Qwen2.5-Math-7B", f"<think>{PROBE_REASONING}</think>{PROBE_ANSWER}<|im_end|>"),
    ("Qwen2.5-14B", f"<think>{PROBE_REASONING}</think>{PROBE_ANSWER}<|im_end|>"),
    # Qwen3's template lays the reasoning out on its own lines
    ("Qwen3-8B-Base", f"<think>\n{PROBE_REASONING}\n</think>\n\n{PROBE_ANSWER}<|im_end|>"),
])
def test_the_mask_is_reasoning_answer_and_end_of_turn_and_nothing_of_the_prompt(folder, completion):
    from transformers import AutoTokenizer

    from distill.chat import tokenize_chat
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / folder)
    ids, mask = tokenize_chat(PROBE, tok, "<|im_end|>", "probe")
    trained = [i for i, m in zip(ids, mask) if m]
    prompt = [i for i, m in zip(ids, mask) if not m]
    assert tok.decode(trained) == completion
    assert trained[-1] == IM_END and mask == [0] * len(prompt) + [1] * len(trained)
    # the prompt is what a server tokenizes before it generates
    served = tok.apply_chat_template(PROBE[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == tok(served, add_special_tokens=False).input_ids
    assert PROBE[0]["content"] in tok.decode(prompt) and served.endswith("<|im_start|>assistant\n")


def test_deepseek_r1_template_is_refused_for_dropping_the_reasoning():
    from distill.chat import prepare_tokenizer
    t = _train_section("r1-to-7b", student="deepseek-ai/DeepSeek-R1", end_of_turn_token=None, pad_token=None)
    with pytest.raises(InputError, match="drops the <think> reasoning"):
        prepare_tokenizer(t, str(TOKENIZERS / "DeepSeek-R1"))


def test_a_template_that_is_not_prefix_preserving_is_refused_naming_the_record(tmp_path):
    """A generation prompt that opens the reasoning (as DeepSeek-R1's now does) while the
    rendered turn does not: the student would learn a continuation no server sends."""
    from transformers import AutoTokenizer

    from distill.chat import prepare_tokenizer, tokenize_chat
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / "Qwen2.5-14B")
    template = tok.chat_template.replace(
        "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}",
        "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n<think>\\n' }}")
    assert template != tok.chat_template
    (tmp_path / "t.jinja").write_text(template)
    t = _train_section("r1-to-14b", chat_template=str(tmp_path / "t.jinja"))
    with pytest.raises(InputError, match="not prefix-preserving"):
        prepare_tokenizer(t, str(TOKENIZERS / "Qwen2.5-14B"))
    tok.chat_template = template
    with pytest.raises(InputError, match="dataset record abc123: the chat template is not prefix-preserving"):
        tokenize_chat(PROBE, tok, "<|im_end|>", "dataset record abc123")


# ------------------------------------------------------------------ tiny real-architecture students

def _tiny_student(folder: str, path: Path, weights: bool = True) -> str:
    """The student's real config.json shrunk to 2 layers of width 32 (same vocab_size, RoPE,
    positions and special tokens), random weights, and its real tokenizer files."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = json.loads((HUB / f"Qwen--{folder}.json").read_text())
    config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_window_layers=2)
    if "head_dim" in config:
        config["head_dim"] = 8
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    if weights:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).save_pretrained(path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZERS / folder / f, path / f)
    return str(path)


def _run_dir(path: Path) -> Path:
    stage = RunDir(path).stage("dataset")
    with stage.writer() as w:
        for t in make_tasks("arith", 6, 0) + make_tasks("code", 2, 0):
            w.write({"id": record_id(t["messages"]), "messages":
                     t["messages"] + [{"role": "assistant", "content": t["reference"]}]})
    stage.complete()
    return path


def _cpu_recipe(recipe: str, student: str, *extra: str):
    """The recipe as written, but for this machine: the student at `student`, two steps, no
    GPU-only kernels, in this process."""
    return load_recipe(recipe_path(recipe), [
        f"train.student={student}", "train.max_steps=2", "train.batch_size=2", "train.grad_accum=1",
        "train.bf16=false", "train.liger=false", "train.gradient_checkpointing=false",
        "train.launch.accelerate_config=null", *extra])


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_student_trains_and_saves_stopping_on_im_end(tmp_path, recipe):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    folder, vocab, trained_positions = RECIPES[recipe]
    student = _tiny_student(folder, tmp_path / "student")
    cfg = _cpu_recipe(recipe, student)
    run = _run_dir(tmp_path / "run")
    model_dir = run_train(cfg, run)
    config = AutoConfig.from_pretrained(model_dir)
    assert config.vocab_size == vocab
    assert config.eos_token_id == [IM_END, ENDOFTEXT] and config.pad_token_id == ENDOFTEXT
    assert GenerationConfig.from_pretrained(model_dir).eos_token_id == [IM_END, ENDOFTEXT]
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.chat_template == AutoTokenizer.from_pretrained(TOKENIZERS / folder).chat_template
    assert config.max_position_embeddings == trained_positions
    lineage = json.loads((run / "train" / "lineage.json").read_text())
    base = json.loads((HUB / f"Qwen--{folder}.json").read_text())["max_position_embeddings"]
    assert lineage["positions"] == {"model": base, "trained": trained_positions, "rope_scaling": None}
    assert RunDir(run).stage("train").manifest()["positions"]["trained"] == trained_positions
    if cfg.train.adapter != "none":
        assert (run / "train" / "adapter" / "adapter_config.json").exists()


# ------------------------------------------------------------------ positions

def test_max_length_past_the_positions_is_refused_before_any_weights_load(tmp_path):
    student = _tiny_student("Qwen2.5-Math-7B", tmp_path / "student", weights=False)
    run = _run_dir(tmp_path / "run")
    cfg = _cpu_recipe("r1-to-7b", student, "train.max_position_embeddings=null")
    with pytest.raises(InputError, match=r"train.max_length 16,384 is past the max_position_embeddings "
                                         r"4,096 .*train.max_position_embeddings.*train.rope_scaling"):
        run_train(cfg, run)
    assert not RunDir(run).stage("train").is_complete()
    with pytest.raises(InputError, match=r"train.max_length 16,384 is past train.max_position_embeddings 8,192"):
        run_train(_cpu_recipe("r1-to-7b", student, "train.max_position_embeddings=8192"), run)
    with pytest.raises(InputError, match=r"past train.rope_scaling \(factor x original_max_position_embeddings = 8,192\)"):
        run_train(_cpu_recipe("r1-to-7b", student, "train.max_position_embeddings=null",
                              "train.rope_scaling={rope_type: yarn, factor: 2.0}"), run)


def test_students_with_enough_positions_need_no_setting():
    """Qwen2.5-14B's 131,072 positions hold its traces and the eval's answers. Qwen3-8B-Base's
    32,768 hold 16k traces, so train needs nothing; the recipe still raises them to 40,960 (as
    Qwen3-8B ships them) so the eval's prompt + 32,768 new tokens fit."""
    from distill.positions import positions
    t = _train_section("r1-to-14b")
    assert t.max_position_embeddings is None and t.rope_scaling is None
    assert positions(t, 131_072, t.student) == {"model": 131_072, "trained": 131_072, "rope_scaling": None}
    t = _train_section("qwen3-moe-to-8b").model_copy(update={"max_position_embeddings": None})
    assert positions(t, 32_768, t.student) == {"model": 32_768, "trained": 32_768, "rope_scaling": None}


def test_rope_scaling_is_applied_to_the_config_the_student_trains_and_saves_with(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM
    student = _tiny_student("Qwen2.5-Math-7B", tmp_path / "student")
    cfg = _cpu_recipe("r1-to-7b", student, "train.max_position_embeddings=null",
                      "train.rope_scaling={rope_type: yarn, factor: 4.0, original_max_position_embeddings: 4096}")
    model_dir = run_train(cfg, _run_dir(tmp_path / "run"))
    config = AutoConfig.from_pretrained(model_dir)
    assert config.max_position_embeddings == 16_384
    assert config.rope_parameters["rope_type"] == "yarn" and config.rope_parameters["factor"] == 4.0
    assert config.rope_parameters["rope_theta"] == 10_000.0  # the base's, kept
    rotary = AutoModelForCausalLM.from_pretrained(model_dir).model.rotary_emb
    assert rotary.rope_type == "yarn" and rotary.attention_scaling > 1.0


def test_model_card_and_plan_say_the_positions_were_raised():
    from distill.plan import format_plan, make_plan
    from distill.publish.card import _lineage_lines
    cfg = load_recipe(recipe_path("r1-to-7b"))
    manifest = {"method": "sft", "records": 10,
                "positions": {"model": 4096, "trained": 40960, "rope_scaling": None}}
    assert ("- Positions: max_position_embeddings raised from 4,096 to 40,960 "
            "(train.max_position_embeddings); trained on sequences of up to 16,384 tokens"
            in _lineage_lines(cfg, {"train": manifest}, None))
    assert "max_position_embeddings 4,096 raised to 40,960" in format_plan(make_plan(cfg))
