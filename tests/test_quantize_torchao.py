"""Weight-only int8 / int4 checkpoints (distill/quantize/torchao.py) on the toy models: what is
quantized, what it weighs on disk, what it answers, and `measure` on plain and quantized
checkpoints.

The untrained toy student answers every prompt with the same newline, so agreement is checked on
the trained toy teacher (its attention Linears are quantized; its experts are one 3-D parameter
per layer, not Linear, and stay float); sizes and layouts on the dense student, where every
projection is a Linear."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torchao")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from distill.errors import InputError  # noqa: E402
from distill.models import resolve_model  # noqa: E402
from distill.quantize.torchao import (  # noqa: E402
    group_size_for,
    measure,
    quantize_checkpoint,
    weight_bytes,
)
from distill.toy.tasks import make_tasks  # noqa: E402

TORCHAO_TYPES = {"int8": "Int8Tensor", "int4": "IntxUnpackedToInt8Tensor"}


@pytest.fixture(scope="module")
def student() -> Path:
    return Path(resolve_model("toy:student"))


@pytest.fixture(scope="module")
def teacher() -> Path:
    return Path(resolve_model("toy:teacher"))


def _prompt_ids(model_dir: Path, n: int) -> list[list[int]]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    families = [make_tasks(f, n, 0, "eval") for f in ("arith", "mult", "code")]
    tasks = [t for group in zip(*families) for t in group][:n]      # the families in turn
    return [tok.apply_chat_template(t["messages"], add_generation_prompt=True, tokenize=True,
                                    return_dict=True)["input_ids"] for t in tasks]


def _greedy(model_dir: Path, prompts: list[list[int]], tokens: int = 32) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p])
            g = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=tokens)
            out.append(g[0, len(p):].tolist())
    return out


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def test_group_size_is_the_largest_that_divides_every_linear():
    assert group_size_for({"q": 64, "down": 192}) == 64       # the toy student
    assert group_size_for({"q": 96}) == 32                    # the toy teacher
    assert group_size_for({"q": 3584, "down": 18944}) == 128  # Qwen2.5-7B
    assert group_size_for({"q": 64, "down": 192}, 32) == 32
    with pytest.raises(InputError, match="group size 128 does not divide the in_features of q"):
        group_size_for({"q": 96}, 128)
    with pytest.raises(InputError, match="none of the group sizes"):
        group_size_for({"q": 48})


@pytest.mark.parametrize("scheme, group, bound", [("int8", None, 0.34), ("int4", 64, 0.35)])
def test_checkpoint_loads_back_quantized_and_smaller(student, tmp_path, scheme, group, bound):
    out = tmp_path / scheme
    r = quantize_checkpoint(student, out, scheme)
    assert r == {"format": "torchao", "scheme": scheme, "path": str(out),
                 "bytes": weight_bytes(out), "group_size": group}
    # fp32 toy: 0.318 of the original for int8, 0.323 for int4 (its values take a byte each, and
    # a scale per 64 inputs); the embedding table, in fp32, is 3% of the student.
    assert r["bytes"] < bound * weight_bytes(student)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (out / name).read_bytes() == (student / name).read_bytes(), name
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"
    assert not list(tmp_path.glob(".*"))                     # no temp dir left behind

    model = AutoModelForCausalLM.from_pretrained(out)
    weights = _weights(model)
    assert len(weights) == 4 * 7 + 1                          # 4 layers x (q k v o gate up down) + lm_head
    for name, w in weights.items():
        if name == "lm_head":
            assert type(w.data) is torch.Tensor and w.dtype == torch.float32
        else:
            assert type(w).__name__ == TORCHAO_TYPES[scheme], name
    emb = model.get_input_embeddings().weight
    assert type(emb.data) is torch.Tensor and emb.dtype == torch.float32
    if scheme == "int4":
        w = weights["model.layers.0.mlp.down_proj"]
        assert int(w.qdata.min()) >= -8 and int(w.qdata.max()) <= 7   # 16 levels
        assert w.scale.shape == (64, 192 // 64)                       # a scale per 64 inputs


def test_quantizing_again_replaces_the_directory(student, tmp_path):
    out = tmp_path / "q"
    quantize_checkpoint(student, out, "int4", group_size=32)
    r = quantize_checkpoint(student, out, "int8")
    assert r["scheme"] == "int8"
    assert "Int8WeightOnlyConfig" in (out / "config.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


@pytest.mark.slow      # 8-27 s each on 2 shared cores
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_greedy_answers_agree_with_the_float_teacher(teacher, tmp_path, scheme):
    prompts = _prompt_ids(teacher, 10)
    r = quantize_checkpoint(teacher, tmp_path / scheme, scheme)
    assert r["group_size"] == (32 if scheme == "int4" else None)
    base, quant = _greedy(teacher, prompts), _greedy(Path(r["path"]), prompts)
    assert len({tuple(a) for a in base}) == 10                # the float teacher's answers differ
    same = sum(a == b for a, b in zip(base, quant))
    # Measured: on these 10, int8 10/10 and int4 9/10 identical; on 30 eval prompts (10 a family),
    # int8 30/30 and int4 29/30.
    assert same >= 8, f"{scheme}: {same}/10 identical"


def test_measure_plain_and_quantized(student, tmp_path):
    q = quantize_checkpoint(student, tmp_path / "int8", "int8")
    prompt = _prompt_ids(student, 1)[0]
    for model_dir in (student, Path(q["path"])):
        m = measure(model_dir, prompt, new_tokens=16, threads=1)
        assert m["new_tokens"] == 16                          # min_new_tokens: no early stop
        assert m["load_s"] > 0 and m["tokens_per_s"] > 0
        assert m["rss_bytes"] > m["rss_before_load_bytes"] > 0


def test_a_directory_without_config_json_is_named(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="no config.json") as e:
        quantize_checkpoint(broken, tmp_path / "out", "int8")
    assert str(broken) in str(e.value)
    with pytest.raises(InputError, match="no config.json") as e:
        measure(broken, [1, 2, 3])
    assert str(broken) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_unknown_scheme_and_a_group_size_for_int8(student, tmp_path):
    with pytest.raises(InputError, match="unknown scheme 'int2'"):
        quantize_checkpoint(student, tmp_path / "q", "int2")
    with pytest.raises(InputError, match="takes no group size"):
        quantize_checkpoint(student, tmp_path / "q", "int8", group_size=32)
