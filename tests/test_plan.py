"""The plan: parameter counts against the published totals, serving memory against known
deployments, costs from recorded usage, and the `distill plan` command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from distill.plan import format_plan, make_plan
from distill.plan.params import _hub_copy, arch_of, closed_form, count, load_config
from distill.plan.serving import GIB, best_layout, kv_bytes, weights_gib

# Published figures as the publishers print them (B parameters). The active figures are rounded
# to two or three digits, and publishers count them differently: "all" includes the embedding
# table (Qwen, Mistral), "matmul" leaves out the input embedding (OpenAI's gpt-oss table; DeepSeek's
# 37B is 36.6B so, 37.6B with it). DeepSeek-V3/R1's 671B is the main model: the Hub's 685B adds
# the 14B multi-token-prediction module, which transformers does not build.
PUBLISHED = [
    ("deepseek-ai/DeepSeek-V3", "671", "37", "matmul"),
    ("deepseek-ai/DeepSeek-R1", "671", "37", "matmul"),
    ("Qwen/Qwen3-235B-A22B", "235", "22", "all"),
    ("Qwen/Qwen3-30B-A3B", "30.5", "3.3", "all"),
    ("mistralai/Mixtral-8x7B-v0.1", "46.7", "12.9", "all"),
    ("openai/gpt-oss-120b", "116.83", "5.13", "matmul"),
    ("openai/gpt-oss-20b", "20.91", "3.61", "matmul"),
    ("Qwen/Qwen2.5-1.5B", "1.54", None, None),
    ("Qwen/Qwen2.5-7B", "7.61", None, None),
    ("Qwen/Qwen2.5-14B", "14.7", None, None),
    ("Qwen/Qwen3-8B", "8.2", None, None),
    ("meta-llama/Llama-3.1-8B", "8.03", None, None),
]


def _unit(figure: str) -> float:
    """One unit of the last printed digit, in parameters: "3.3" -> 0.1e9."""
    return 10.0 ** -len(figure.split(".")[1]) * 1e9 if "." in figure else 1e9


@pytest.mark.parametrize("name, total, active, convention", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_parameter_counts_match_the_published_figures(name, total, active, convention):
    cfg = json.loads(_hub_copy(name).read_text())  # the published config.json, as shipped
    p = count(cfg)
    assert p.method == "meta"
    assert p.total == pytest.approx(float(total) * 1e9, rel=0.01)
    if active is None:
        assert p.active == p.total and p.experts == 0
        return
    got = p.active if convention == "all" else p.matmul
    assert abs(got - float(active) * 1e9) <= max(0.01 * float(active) * 1e9, _unit(active)), got
    assert p.active < p.total / 3  # a token uses a small part of a MoE


@pytest.mark.parametrize("name", [p[0] for p in PUBLISHED] + ["toy:teacher", "toy:student"])
def test_closed_form_agrees_with_the_meta_device_count(name):
    cfg, _ = load_config(name)
    meta, closed = count(cfg), closed_form(cfg)
    assert (closed.total, closed.active, closed.experts, closed.embedding, closed.lm_head) == \
        (meta.total, meta.active, meta.experts, meta.embedding, meta.lm_head)


def test_configs_load_from_a_directory_a_file_a_toy_name_or_the_published_copy(tmp_path):
    (tmp_path / "config.json").write_text(_hub_copy("Qwen/Qwen3-8B").read_text())
    for name in (str(tmp_path), str(tmp_path / "config.json")):
        cfg, source = load_config(name)
        assert cfg["model_type"] == "qwen3" and source == str(tmp_path / "config.json")
    assert load_config("toy:teacher")[0]["model_type"] == "qwen3_moe"
    from distill.errors import InputError
    with pytest.raises(InputError, match="no config.json in the model directory"):
        load_config(str(tmp_path / ".."))
    with pytest.raises(InputError, match="config file not found"):
        load_config("./nowhere/config.json")


def test_an_architecture_transformers_lacks_is_counted_in_closed_form(monkeypatch):
    from distill.errors import InputError
    from distill.plan import params

    def lacking(cfg):  # as an older transformers without the model_type
        raise KeyError(cfg["model_type"])
    cfg = {**json.loads(_hub_copy("Qwen/Qwen3-30B-A3B").read_text()), "vocab_size": 151937}
    exact = count(cfg)
    monkeypatch.setattr(params, "_transformers_config", lacking)
    params._count.cache_clear()
    fallback = count(cfg)
    assert (fallback.method, exact.method) == ("closed-form", "meta")
    assert (fallback.total, fallback.active) == (exact.total, exact.active)
    with pytest.raises(InputError, match="no parameter count for model_type 'brand_new'"):
        count({**cfg, "model_type": "brand_new"})
    params._count.cache_clear()


def test_kv_cache_is_mla_aware_and_honours_sliding_windows_and_tensor_parallelism():
    ds = arch_of(load_config("deepseek-ai/DeepSeek-R1")[0])
    # The latent (512) and the rope key (64) per layer, bf16: 70x less than K and V of 128 heads.
    assert kv_bytes(ds, 1) == 61 * (512 + 64) * 2
    assert kv_bytes(ds, 1, tp=8) == kv_bytes(ds, 1)  # every TP rank keeps the whole latent
    qwen = arch_of(load_config("Qwen/Qwen2.5-7B")[0])
    assert kv_bytes(qwen, 1) == 28 * 2 * 4 * 128 * 2
    assert kv_bytes(qwen, 1, tp=8) == kv_bytes(qwen, 1) / 4  # 4 KV heads: one per GPU, replicated
    assert kv_bytes(qwen, 1000, kv_dtype="fp8") == kv_bytes(qwen, 1000) / 2
    oss = arch_of(load_config("openai/gpt-oss-20b")[0])
    assert oss.sliding_layers == 12 and oss.sliding_window == 128
    per_layer = 2 * 8 * 64 * 2
    assert kv_bytes(oss, 10_000) == (12 * 10_000 + 12 * 128) * per_layer


def test_layouts_match_known_deployments():
    """DeepSeek-R1's FP8 checkpoint runs on one node of 8 H200 (vLLM's guide: TP8+EP or DP8+EP)
    and not on 4, needs two nodes of H100; gpt-oss-120b's mxfp4 fits one 80 GB GPU."""
    cfg, _ = load_config("deepseek-ai/DeepSeek-R1")
    a, p = arch_of(cfg, "deepseek-ai/DeepSeek-R1"), count(cfg)
    assert weights_gib(a, p, "fp8") == pytest.approx(671e9 / GIB, rel=0.02)
    assert weights_gib(a, p, "bf16") == pytest.approx(2 * p.total / GIB)
    h200, _ = best_layout(a, p, "H200", "fp8", 40960, 16896, 256)
    assert h200.gpus == 8 and h200.ep and h200.dp == 8  # DP attention: the latent is not replicated
    h100, _ = best_layout(a, p, "H100", "fp8", 40960, 16896, 256)
    assert h100.gpus == 16 and h100.pp == 2
    oss_cfg, _ = load_config("openai/gpt-oss-120b")
    oss = arch_of(oss_cfg)
    one, _ = best_layout(oss, count(oss_cfg), "H100", "mxfp4", 8192, 4096, 1)
    assert oss.checkpoint == "mxfp4" and one.gpus == 1
    bf16, _ = best_layout(oss, count(oss_cfg), "H100", "bf16", 8192, 4096, 1)
    assert bf16.gpus == 4


def _r1_recipe(overrides=()):
    from distill.config import load_recipe
    from distill.config import recipe_path
    return load_recipe(recipe_path("r1-to-7b"), list(overrides))


def test_r1_to_7b_plan_projects_the_generation_cost():
    cfg = _r1_recipe()
    plan = make_plan(cfg)
    g = plan["generation"]
    assert g["prompts"] == 200_000 and "mbpp_train" in g["prompts_source"]  # count: null
    ctx = plan["context"]
    assert ctx["max_model_len"] == 8192 + 32768 and ctx["completion_tokens"] == 16384
    proj = g["projected"]
    assert proj["output_tokens"] == 200_000 * 4 * 16384
    assert proj["api_usd"] == pytest.approx((200_000 * 512 * 0.55 + proj["output_tokens"] * 2.19) / 1e6)
    # 8 x H200 at $3.50 and 5,500 tokens/s (the recipe's plan section)
    assert proj["device_hours"] == pytest.approx(proj["output_tokens"] / 5500 / 3600 * 8)
    assert proj["self_hosted_usd"] == pytest.approx(proj["device_hours"] * 3.5)
    sc = g["serving_usd_per_m"]
    assert sc["teacher_self_hosted"] == pytest.approx(8 * 3.5 / (5500 * 3600) * 1e6)
    assert sc["student"] < sc["teacher_self_hosted"] / 5  # 7B dense vs 37B-active MoE
    assert plan["compute"]["ratio"] > 5
    # Qwen2.5-Math-7B's 4,096 positions, raised by the recipe for its 16,384-token traces
    assert "max_position_embeddings 4,096 raised to 40,960" in format_plan(plan)
    unraised = make_plan(_r1_recipe(["train.max_position_embeddings=null"]))
    assert any("train.max_length 16,384 is past the max_position_embeddings 4,096" in w
               for w in unraised["warnings"])


def _fake_generation(run_dir, cfg, n_prompts=6, samples=2, completion=1000, latency=2.0):
    """Generation records as the generate stage writes them: one request per prompt with
    `samples` choices sharing its usage."""
    from distill.records import Stage
    stage = Stage(run_dir, "generate")
    with stage.writer() as w:
        for p in range(n_prompts):
            for i in range(samples):
                w.write({"id": f"g{p}-{i}", "prompt_id": f"p{p}", "sample_index": i,
                         "gen_hash": cfg.generation_hash(), "category": "reasoning" if p % 2 else "coding",
                         "usage": {"prompt_tokens": 300, "completion_tokens": completion * samples,
                                   "choices": samples,
                                   "completion_tokens_details": {"reasoning_tokens": 800 * samples}},
                         "latency_s": latency, "cost": 0.01, "messages": [{"role": "user", "content": "q"}],
                         "reasoning": "r", "content": "c"})
    stage.complete()


def test_after_a_run_the_plan_measures_lengths_throughput_and_cost(tmp_path):
    cfg = _r1_recipe(["plan.teacher_tokens_per_s=null"])
    _fake_generation(tmp_path, cfg)
    plan = make_plan(cfg, tmp_path)
    assert plan["context"]["completion_tokens"] == 1000 and plan["context"]["prompt_tokens"] == 300
    assert "measured over 12 samples" in plan["context"]["completion_source"]
    act = plan["generation"]["actual"]
    assert (act["samples"], act["requests"], act["input_tokens"], act["output_tokens"]) == (12, 6, 1800, 12000)
    assert act["reasoning_tokens"] == 9600
    assert act["recorded_usd"] == pytest.approx(0.12)
    assert act["api_usd"] == pytest.approx((1800 * 0.55 + 12000 * 2.19) / 1e6)
    # Little's law: 6 requests in flight (fewer than max_concurrency), 12,000 tokens over 12 s
    assert act["tokens_per_s"] == pytest.approx(6 * 12000 / 12.0)
    assert plan["generation"]["tokens_per_s_source"] == "measured in the generate stage"
    # the projection for the whole recipe now uses the measured length
    assert plan["generation"]["projected"]["output_tokens"] == 200_000 * 4 * 1000


def test_samples_of_another_generation_config_are_not_counted(tmp_path):
    cfg = _r1_recipe()
    _fake_generation(tmp_path, _r1_recipe(["generate.temperature=1.0"]))
    assert make_plan(cfg, tmp_path)["generation"].get("actual") is None


def _cli(*args):
    """`distill plan ARGS` in this process (the counts stay cached between calls)."""
    from typer.testing import CliRunner

    from distill.cli import app
    r = CliRunner().invoke(app, ["plan", *args])
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def test_distill_plan_prints_what_a_gpu_user_acts_on():
    r = _cli("configs/r1-to-7b.yaml")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "671B" in out and "37.6B (36.6B without the input embedding)" in out
    assert "68.6 KiB (MLA latent)" in out
    assert ("vllm serve deepseek-ai/DeepSeek-R1 --data-parallel-size 8 --enable-expert-parallel "
            "--max-model-len 40960") in out
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in out  # 16 H100 in FP8
    assert "--reasoning-parser deepseek_r1" in out
    for gpu in ("H100 80GB", "H200 141GB", "MI300X 192GB"):
        assert gpu in out
    assert "API at $0.55/M in, $2.19/M out" in out and "self-hosted cost" in out


def test_plan_from_a_config_file_and_its_errors(tmp_path):
    good = tmp_path / "config.json"
    good.write_text(_hub_copy("Qwen/Qwen3-30B-A3B").read_text())
    r = _cli("--teacher-config", str(good), "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["teacher"]["total"] == count(json.loads(good.read_text())).total
    assert plan["teacher"]["moe"] == {"experts": 128, "top_k": 8}
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_type": "qwen3",\n  "hidden_size": }')
    r = _cli("--teacher-config", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"{bad}:2" in r.stderr and "not valid JSON" in r.stderr
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"model_type": "qwen3", "hidden_size": 64}))
    r = _cli("--teacher-config", str(partial))
    assert r.returncode == 2 and "num_hidden_layers: missing from config.json" in r.stderr
    r = _cli("configs/r1-to-7b.yaml", "-o", "plan.hardwar=H100")
    assert r.returncode == 2 and "plan.hardwar: unknown key" in r.stderr


# Published GGUF files of Qwen2.5-7B-Instruct (Qwen/Qwen2.5-7B-Instruct-GGUF on the Hub), GB:
# the architecture of r1-to-7b's student, Qwen2.5-Math-7B (same shapes and vocabulary).
GGUF_QWEN25_7B = {"Q8_0": 8.1e9, "Q4_K_M": 4.68e9}


def test_the_student_on_small_machines_matches_the_published_gguf_sizes():
    from distill.plan.edge import edge_bytes
    plan = make_plan(_r1_recipe())
    e, s = plan["student_edge"], plan["student"]
    for fmt, published in GGUF_QWEN25_7B.items():
        assert e["weights"][fmt] == pytest.approx(published, rel=0.10), fmt
        cfg = json.loads(_hub_copy("Qwen/Qwen2.5-7B").read_text())
        assert edge_bytes(arch_of(cfg), count(cfg))[fmt] == pytest.approx(published, rel=0.10), fmt
    w = e["weights"]
    assert w["bf16"] == 2 * s["total"]
    # torchao keeps the two 545M-parameter tables (embedding, untied lm_head) in bf16
    tables = 2 * 152064 * 3584
    assert w["int8"] == pytest.approx((s["total"] - tables) * (1 + 2 / 3584) + 2 * tables, rel=1e-3)
    assert w["Q4_K_M"] < w["int4"] < w["Q8_0"] < w["int8"] < w["bf16"]
    # the eval context: plan.max_prompt_tokens 8,192 + eval.max_tokens 32,768, within the
    # 40,960 positions the recipe trains; K and V of 4 heads x 128 x 28 layers in bf16
    assert e["context"] == 40960
    assert e["kv_bytes"] == 40960 * 28 * 2 * 4 * 128 * 2
    assert e["teacher_dtype"] == "fp8" and e["teacher_bytes"] == pytest.approx(626.8 * GIB, rel=1e-3)
    text = format_plan(plan)
    assert "| format                     | bits/weight |  weights | + KV @ 40,960 |" in text
    assert "| Q4_K_M (llama.cpp)         |        4.89 |  4.3 GiB |       6.5 GiB |" in text
    assert "| int4 weight-only (torchao) |" in text and "| Q8_0 (llama.cpp)           |        8.50 |" in text
    assert ("The Qwen/Qwen2.5-Math-7B at 4 bits (Q4_K_M) needs 4.3 GiB (6.5 GiB with the KV cache); "
            "the teacher needs 626.8 GiB (fp8).") in text


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("recipe", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_recipe_plans_its_student_on_small_machines(recipe):
    from distill.config import load_recipe, recipe_path
    cfg = load_recipe(recipe_path(recipe), [])
    plan = make_plan(cfg)
    e = plan["student_edge"]
    assert set(e["weights"]) == {"bf16", "Q8_0", "Q4_K_M", "int8", "int4"}
    assert 0 < e["weights"]["Q4_K_M"] < e["weights"]["Q8_0"] < e["weights"]["bf16"]
    assert 0 < e["context"] <= (plan["student_positions"] or {}).get("trained", e["context"])
    text = format_plan(plan)
    assert "The student on small machines" in text
    assert f"The {cfg.train.student} at 4 bits (Q4_K_M) needs" in text
