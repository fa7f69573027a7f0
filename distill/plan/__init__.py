"""The sizing and cost plan of a recipe: reads the recipe, the teacher's and student's
config.json and (after a run) the run directory's prompt and generation records; returns the
plan as a dict (`make_plan`) and as text (`format_plan`). `distill plan` prints it; the report's
economics section (distill/publish/economics.py) builds on it.

    params.py    total and active parameters (meta device, closed form as fallback)
    serving.py   weights, KV cache, GPUs, tensor / expert parallel sizes, vLLM flags
    cost.py      FLOPs per token, token and GPU-hour costs, usage recorded by a run
    edge.py      the student in GGUF and torchao weight-only formats, its KV cache at eval

May import: the contract (config, records, models, positions), toy. Not a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.models import is_toy
from distill.plan import cost, edge, serving
from distill.plan.params import Arch, Params, describe
from distill.plan.serving import DTYPES, GPUS
from distill.plan.text import format_plan


def _model(a: Arch, p: Params) -> dict:
    out = {"name": a.name, "config": a.source, "model_type": a.model_type, "counted": p.method,
           "total": p.total, "active": p.active, "matmul": p.matmul, "embedding": p.embedding,
           "experts": p.experts, "checkpoint": a.checkpoint, "layers": a.layers,
           "max_positions": a.max_positions,
           "weights_gib": {d: serving.weights_gib(a, p, d)
                           for d in DTYPES + ((a.checkpoint,) if a.checkpoint not in DTYPES else ())},
           "kv_bytes_per_token": serving.kv_bytes(a, 1),
           "kv_cache": "MLA latent" if a.mla else ("GQA" if a.kv_heads < a.heads else "MHA")}
    if a.moe:
        out["moe"] = {"experts": a.num_experts, "top_k": a.top_k}
    if a.mla:  # what the cache would be if K and V of every head were kept (transformers does)
        out["kv_bytes_per_token_uncompressed"] = (a.layers * a.heads * 2.0
                                                  * (a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim))
    return out


def _serve_dtype(a: Arch, wanted: str) -> str:
    return a.checkpoint if wanted == "auto" else wanted


def _layout_dict(lay: serving.Layout | None) -> dict | None:
    if lay is None:
        return None
    return {"gpu": lay.gpu, "dtype": lay.dtype, "layout": lay.name, "gpus": lay.gpus,
            "tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "ep": lay.ep, "weights_gib": lay.weights_gib,
            "kv_room_gib": lay.room_gib, "seqs_full": lay.seqs_full, "seqs_mean": lay.seqs_mean}


def make_plan(cfg=None, run_dir: Path | None = None, *, teacher_config: str | None = None,
              student_config: str | None = None, measured: dict | None = None,
              prompts_from_recipe: bool = False) -> dict:
    """The plan for recipe `cfg` (None: the teacher of `teacher_config` alone, with the default
    generation settings). `measured`: {"teacher" | "student": (tokens/s, where from)} measured by
    the caller, used where the recipe states no throughput. `prompts_from_recipe`: project the
    recipe's prompt count even when `run_dir` (a pilot's) holds fewer prompts."""
    from distill.config import GenerateConfig, PlanConfig
    pc = cfg.plan if cfg is not None else PlanConfig()
    g = cfg.generate if cfg is not None else GenerateConfig()
    t_name = cfg.teacher.model if cfg is not None else (teacher_config or "")
    ta, tp_ = describe(t_name, cfg.teacher.revision if cfg else None, teacher_config or pc.teacher_config)
    student = None
    if cfg is not None or student_config:
        s_name = cfg.train.student if cfg is not None else (student_config or "")
        student = describe(s_name, cfg.train.revision if cfg else None, student_config or pc.student_config)
    warnings: list[str] = []
    usage = cost.recorded_usage(run_dir, cfg.generation_hash() if cfg is not None else None)

    # Context: what vLLM must admit (--max-model-len) and what a sequence holds on average.
    max_len = pc.max_prompt_tokens + g.max_tokens
    if pc.completion_tokens:
        completion, completion_src = pc.completion_tokens, "plan.completion_tokens"
    elif usage and usage.mean_completion:
        completion, completion_src = round(usage.mean_completion), f"measured over {usage.samples:,} samples"
    else:
        completion, completion_src = g.max_tokens // 2, "assumed: half of generate.max_tokens"
    prompt = round(usage.mean_prompt) if usage and usage.mean_prompt else pc.prompt_tokens
    mean_len = prompt + completion
    if ta.max_positions and max_len > ta.max_positions:
        warnings.append(f"--max-model-len {max_len:,} (plan.max_prompt_tokens + generate.max_tokens) "
                        f"exceeds the teacher's max_position_embeddings {ta.max_positions:,}")
    kv_dtype = "fp8" if pc.kv_cache_dtype == "fp8" else "bf16"
    util = pc.gpu_memory_utilization
    want = g.max_concurrency

    rows, commands = [], {}
    for gpu in GPUS:
        dtypes = DTYPES + ((ta.checkpoint,) if ta.checkpoint not in DTYPES else ())
        for dtype in dtypes:
            smallest, enough = serving.best_layout(ta, tp_, gpu, dtype, max_len, mean_len, want,
                                                   kv_dtype, util)
            rows.append({"gpu": gpu, "dtype": dtype, "native": dtype == ta.checkpoint,
                         "smallest": _layout_dict(smallest), "enough": _layout_dict(enough)})
            if dtype == _serve_dtype(ta, pc.weights_dtype) and not is_toy(t_name):
                lay, notes = serving.recommend(ta, tp_, gpu, dtype, max_len, mean_len, want, kv_dtype, util)
                if lay is None:
                    continue
                cmd, needs = serving.vllm_command(ta, lay, t_name, max_len, min(want, lay.seqs_mean),
                                                  kv_dtype, util)
                commands[gpu] = {"layout": _layout_dict(lay), "command": " ".join(cmd),
                                 "notes": notes + needs}

    plan: dict[str, Any] = {"teacher": _model(ta, tp_), "student": _model(*student) if student else None,
            "context": {"max_model_len": max_len, "prompt_tokens": prompt,
                        "completion_tokens": completion, "completion_source": completion_src,
                        "mean_len": mean_len, "concurrency": want, "kv_cache_dtype": kv_dtype,
                        "gpu_memory_utilization": util},
            "serving": rows, "commands": commands, "warnings": warnings}

    # Compute: FLOPs per generated token at the mean position.
    position = prompt + completion // 2
    t_flops = cost.flops_per_token(ta, tp_, position)
    plan["compute"] = {"position": position, "teacher_flops": t_flops}
    if student:
        sa, sp = student
        s_flops = cost.flops_per_token(sa, sp, position)
        plan["compute"].update(student_flops=s_flops, ratio=t_flops / s_flops)
        smallest, _ = serving.best_layout(sa, sp, "H100" if pc.hardware == "cpu" else pc.hardware,
                                          "bf16", max_len, mean_len, 1, kv_dtype, util)
        plan["student_serving"] = _layout_dict(smallest)
        if cfg is not None and sa.max_positions:
            # The train stage's own rule: train.max_length within the positions the recipe gives.
            from distill.errors import InputError
            from distill.positions import positions
            try:
                plan["student_positions"] = {**positions(cfg.train, sa.max_positions, cfg.train.student),
                                             "max_length": cfg.train.max_length}
            except InputError as e:
                warnings.append(f"{e.message}; the train stage refuses this recipe")
        # The student on small machines, at the context the eval stage serves it with.
        trained = (plan.get("student_positions") or {}).get("trained") or sa.max_positions
        context = (edge.eval_context(cfg, trained) if cfg is not None
                   else min(max_len, trained) if trained else max_len)
        t_dtype = _serve_dtype(ta, pc.weights_dtype)
        plan["student_edge"] = {**edge.edge_plan(sa, sp, context), "teacher_dtype": t_dtype,
                                "teacher_bytes": serving.weights_gib(ta, tp_, t_dtype) * serving.GIB}
    if cfg is not None:
        plan["generation"] = _generation(cfg, run_dir, plan, usage, warnings, measured or {},
                                         prompts_from_recipe)
    return plan


def teacher_devices(cfg, plan: dict) -> int:
    """Devices the teacher deployment takes: plan.teacher_gpus, else the layout the plan
    chose on plan.hardware (one machine for cpu)."""
    pc = cfg.plan
    if pc.teacher_gpus:
        return pc.teacher_gpus
    chosen = plan["commands"].get(pc.hardware)
    return chosen["layout"]["gpus"] if chosen else 1


def _generation(cfg, run_dir, plan: dict, usage: cost.Usage | None, warnings: list[str],
                measured: dict, prompts_from_recipe: bool = False) -> dict:
    pc, g = cfg.plan, cfg.generate
    n_prompts, prompts_src = cost.prompt_count(cfg, None if prompts_from_recipe else run_dir)
    ctx = plan["context"]
    devices = teacher_devices(cfg, plan)
    measured_tps = usage.tokens_per_s(g.max_concurrency) if usage else None
    if pc.teacher_tokens_per_s:
        tps, tps_src = pc.teacher_tokens_per_s, "plan.teacher_tokens_per_s"
    elif measured.get("teacher"):
        tps, tps_src = measured["teacher"]
    elif measured_tps:
        tps, tps_src = measured_tps, "measured in the generate stage"
    else:
        tps, tps_src = None, None
    out = {"prompts": n_prompts, "prompts_source": prompts_src, "samples_per_prompt": g.samples_per_prompt,
           "price_per_m": dict(zip(("input", "output", "reasoning"), cost.prices(cfg))),
           "hardware": pc.hardware, "hourly_usd": pc.hourly_usd, "devices": devices,
           "tokens_per_s": tps, "tokens_per_s_source": tps_src}
    if n_prompts:
        samples = n_prompts * g.samples_per_prompt
        # One request per prompt asks for all its samples (n), so the prompt is paid once.
        inp, outp = n_prompts * ctx["prompt_tokens"], samples * ctx["completion_tokens"]
        proj = {"samples": samples, "input_tokens": inp, "output_tokens": outp,
                "api_usd": cost.api_cost(cfg, inp, outp) if any(cost.prices(cfg)[:2]) else None}
        hours = cost.gpu_hours(outp, tps, devices)
        proj["device_hours"] = hours
        proj["self_hosted_usd"] = hours * pc.hourly_usd if hours is not None and pc.hourly_usd is not None else None
        out["projected"] = proj
        _over_the_cap(g, proj, warnings)
    if usage:
        hours = cost.gpu_hours(usage.completion_tokens, measured_tps, devices)
        out["actual"] = {
            "samples": usage.samples, "prompts": usage.prompts, "requests": round(usage.requests),
            "input_tokens": round(usage.prompt_tokens), "output_tokens": round(usage.completion_tokens),
            "reasoning_tokens": round(usage.reasoning_tokens), "recorded_usd": usage.cost_usd,
            "api_usd": cost.api_cost(cfg, usage.prompt_tokens, usage.completion_tokens,
                                     usage.reasoning_tokens) if any(cost.prices(cfg)[:2]) else None,
            "tokens_per_s": measured_tps, "device_hours": hours,
            "self_hosted_usd": hours * pc.hourly_usd if hours is not None and pc.hourly_usd is not None else None,
        }
    out["serving_usd_per_m"] = _serving_cost(cfg, plan, tps, tps_src, devices, measured.get("student"))
    if not any(cost.prices(cfg)[:2]) and (pc.hourly_usd is None or tps is None):
        warnings.append("no cost: set generate.price_per_m_input / price_per_m_output for an API "
                        "teacher, or plan.hourly_usd and plan.teacher_tokens_per_s (or run a pilot "
                        "generate: the plan then measures the throughput) for a self-hosted one")
    return out


def _over_the_cap(g, proj: dict, warnings: list[str]) -> None:
    """Warns when the projection passes the recipe's spend cap: the generate stage would stop
    there, with part of the samples."""
    stop = "the generate stage will stop at the cap, about {:.0%} of the way through the samples"
    usd, hours = proj["api_usd"], proj["device_hours"]
    if g.max_usd is not None and usd is not None and usd > g.max_usd:
        warnings.append(f"the projected API cost, ${usd:,.2f}, exceeds generate.max_usd = "
                        f"${g.max_usd:,.2f}: " + stop.format(g.max_usd / usd))
    if g.max_gpu_hours is not None and hours is not None and hours > g.max_gpu_hours:
        warnings.append(f"the projected {hours:,.1f} GPU-hours (generating alone; loading the model "
                        f"counts too) exceed generate.max_gpu_hours = {g.max_gpu_hours:,.2f}: "
                        + stop.format(g.max_gpu_hours / hours))


def _serving_cost(cfg, plan: dict, tps: float | None, tps_src: str | None, devices: int,
                  student_measured: tuple | None) -> dict:
    """$ per million generated tokens: the teacher through its API and self-hosted, the student
    self-hosted. Without a stated student throughput, the teacher's per-device throughput scaled
    by the FLOPs ratio stands in for it: batch decoding is bound by compute per token, and MoE
    serving runs at a lower utilisation than dense, so the estimate errs on the student's dear
    side."""
    pc = cfg.plan
    st = plan.get("student_serving")
    s_devices = 1 if pc.hardware == "cpu" or not st else st["gpus"]
    s_tps, s_src = pc.student_tokens_per_s, "plan.student_tokens_per_s"
    if not s_tps and student_measured:
        s_tps, s_src = student_measured
    if not s_tps and tps and plan["compute"].get("ratio"):
        s_tps = tps / devices * plan["compute"]["ratio"] * s_devices
        s_src = "estimated: the teacher's tokens/s per device x the FLOPs ratio"
    p_out = cost.prices(cfg)[1]
    return {"teacher_api": p_out or None,
            "teacher_self_hosted": cost.usd_per_m_tokens(tps, devices, pc.hourly_usd),
            "teacher_tokens_per_s": tps, "teacher_tokens_per_s_source": tps_src, "teacher_devices": devices,
            "student": cost.usd_per_m_tokens(s_tps, s_devices, pc.hourly_usd),
            "student_tokens_per_s": s_tps, "student_tokens_per_s_source": s_src if s_tps else None,
            "student_devices": s_devices}


__all__ = ["make_plan", "format_plan", "teacher_devices"]
