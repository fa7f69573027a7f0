"""The report's economics section: reads the recipe, the leaderboard rows and the run's
generation, filter and prompt records; writes report/economics.md, report/economics.json and
report/quality_vs_cost.png.

What it says: teacher against base and distilled student in memory (total parameters), compute
(FLOPs per token, active parameters), throughput and cost per million served tokens beside the
quality each keeps (pass@1 and retention per benchmark); what the generation cost, what one
kept trace cost once the traces the filters threw away are paid for too, and how the spend
splits over the filters; the generation's projection beside what the run used; and, for a local
Mixture-of-Experts teacher, its expert utilisation per task category with collapse warnings.

Throughput, in order of preference: the recipe's `plan.*_tokens_per_s`; with
`plan.measure_throughput`, a timed batched greedy generation of local models on this machine,
all models in the same harness (same prompts, same batch, the same number of new tokens);
the teacher's throughput measured in the generate stage (Little's law, distill.plan.cost);
for the student, the teacher's figure scaled by the FLOPs ratio. Each figure says where it came
from.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

from distill.config import Recipe
from distill.errors import InputError
from distill.models import is_toy, resolve_model
from distill.plan import cost, make_plan
from distill.plan.text import count, generation_text, size, table, usd
from distill.records import RunDir, current_traces, write_json, write_text

log = logging.getLogger(__name__)

MEASURE_BATCH = 32
MEASURE_NEW_TOKENS = 48


def _local_model(name: str) -> str | None:
    """A directory holding the model's weights, or None for a model reached over an API."""
    if is_toy(name):
        return resolve_model(name)
    return name if Path(name).is_dir() else None


def measure_tokens_per_s(path: str, prompts: list[list[dict]], batch: int = MEASURE_BATCH,
                         new_tokens: int = MEASURE_NEW_TOKENS, repeats: int = 3) -> float:
    """Output tokens/s of greedy batched generation with transformers: `batch` prompts, exactly
    `new_tokens` new tokens each (EOS suppressed, so every model generates the same count); the
    best of `repeats` timed runs after a warm-up, on one thread on a CPU (see
    `one_thread_on_cpu`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.experts import one_thread_on_cpu
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    with one_thread_on_cpu(model):
        return _timed_generation(model, AutoTokenizer.from_pretrained(path), prompts, batch,
                                 new_tokens, repeats)


def _timed_generation(model, tok, prompts, batch: int, new_tokens: int, repeats: int) -> float:
    import torch
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
             for m in (prompts * batch)[:batch]]
    enc = tok(texts, return_tensors="pt", padding=True).to(model.device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    kwargs = dict(do_sample=False, pad_token_id=pad)
    best = float("inf")
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=2, **kwargs)          # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
            best = min(best, time.perf_counter() - start)
    return batch * new_tokens / best


def _measure(cfg: Recipe, run_dir: Path) -> dict[str, tuple[float, str]]:
    """With plan.measure_throughput: role -> (tokens/s, how) for the local models the recipe
    states no throughput for, timed here in one harness."""
    pc = cfg.plan
    rd = RunDir(run_dir)
    if not pc.measure_throughput or not rd.prompts.path.is_dir():
        return {}
    prompts = [p["messages"] for p in rd.prompts.read()][:MEASURE_BATCH]
    where = f"measured here: {MEASURE_BATCH} prompts x {MEASURE_NEW_TOKENS} new tokens, greedy, best of 3"
    paths = {"teacher": None if pc.teacher_tokens_per_s else _local_model(cfg.teacher.model),
             "student": None if pc.student_tokens_per_s else str(rd.train.path / "model")}
    return {role: (measure_tokens_per_s(path, prompts), where)
            for role, path in paths.items() if prompts and path and Path(path).is_dir()}


def _quality(rows: list[dict]) -> dict[str, dict]:
    """role -> {benchmark: pass@1, "mean": ..., "retention": mean of per-benchmark retention}."""
    out: dict[str, dict] = defaultdict(dict)
    ret: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["metric"] == "pass@1" and "/" not in r["category"]:
            out[r["role"]][r["benchmark"]] = r["score"]
            if r["retention"] is not None:
                ret[r["role"]].append(r["retention"])
    for role, scores in out.items():
        scores["mean"] = sum(scores.values()) / len(scores)
        scores["retention"] = sum(ret[role]) / len(ret[role]) if ret[role] else None
    return dict(out)


def _models_table(cfg: Recipe, plan: dict, quality: dict) -> tuple[str, list[dict]]:
    pc, t, s, c = cfg.plan, plan["teacher"], plan["student"], plan["compute"]
    sc = plan["generation"]["serving_usd_per_m"]
    devices = {"teacher": sc["teacher_devices"], "student": sc["student_devices"]}
    tps = {role: (sc[f"{role}_tokens_per_s"], sc[f"{role}_tokens_per_s_source"]) for role in devices}
    entries = []
    for role, m, flops in (("teacher", t, c["teacher_flops"]), ("base", s, c["student_flops"]),
                           ("student", s, c["student_flops"])):
        speed, source = tps["teacher" if role == "teacher" else "student"]
        dev = devices["teacher" if role == "teacher" else "student"]
        per_m = cost.usd_per_m_tokens(speed, dev, pc.hourly_usd)
        api = sc["teacher_api"] if role == "teacher" else None
        q = quality.get(role, {})
        entries.append({"role": role, "model": cfg.teacher.model if role == "teacher" else
                        (cfg.train.student if role == "base" else f"{cfg.run.name}-distilled"),
                        "total": m["total"], "active": m["active"], "weights_bf16_gib": m["weights_gib"]["bf16"],
                        "kv_bytes_per_token": m["kv_bytes_per_token"], "flops_per_token": flops,
                        "tokens_per_s": speed, "tokens_per_s_source": source, "devices": dev,
                        "usd_per_m_tokens": per_m, "api_usd_per_m_tokens": api,
                        "mean_pass1": q.get("mean"), "retention": q.get("retention")})
    rows = [[e["role"], e["model"], count(e["total"]), count(e["active"]), size(2.0 * e["total"]),
             size(e["kv_bytes_per_token"]), f"{e['flops_per_token'] / 1e9:,.3g}",
             f"{e['tokens_per_s']:,.0f}" if e["tokens_per_s"] else "n/a",
             usd(e["usd_per_m_tokens"]) + (f" (API {usd(e['api_usd_per_m_tokens'])})" if e["api_usd_per_m_tokens"] else ""),
             "" if e["mean_pass1"] is None else f"{100 * e['mean_pass1']:.1f}",
             "" if e["retention"] is None else f"{e['retention']:.2f}"] for e in entries]
    text = table(["role", "model", "params", "active", "weights (bf16)", "KV / token",
                  f"GFLOPs / token @ {c['position']:,}", "tokens/s", "$ / M tokens", "mean pass@1 %",
                  "retention"], rows, right={2, 3, 4, 5, 6, 7, 8, 9, 10})
    sources = sorted({f"{e['role'] if e['role'] == 'teacher' else 'students'}: {e['tokens_per_s_source']}"
                      for e in entries if e["tokens_per_s_source"]})
    hw = f"{pc.hardware} at ${pc.hourly_usd}/device-hour" if pc.hourly_usd is not None else \
        f"{pc.hardware} (no plan.hourly_usd: no self-hosted price)"
    text += (f"\n\nServed on {hw}; teacher on {devices['teacher']}, students on {devices['student']} "
             f"device(s). Throughput: " + "; ".join(sources or ["unknown"]) + ". Retention: the "
             "mean over benchmarks of pass@1 / the teacher's pass@1.")
    return text, entries


def _edge_entries(run_dir: Path, quality: dict) -> list[dict]:
    """The quantize stage's variants (and the unquantized student as it measured it): weights
    on disk, resident memory and single-stream CPU tokens/s as measured there, beside quality."""
    from distill.publish.edge import variants
    out = []
    for v in variants(run_dir):
        q = quality.get(v["role"], {})
        out.append({"role": v["role"], "model": v["name"], "format": v["format"],
                    "weights_bytes": v["bytes"], "model_rss_bytes": v.get("model_rss_bytes"),
                    "cpu_tokens_per_s": v.get("tokens_per_s"), "mean_pass1": q.get("mean"),
                    "retention": q.get("retention")})
    return out


def edge_text(edge: list[dict], plan: dict) -> str:
    """The edge table and its sentence: what the student needs at its smallest, and the teacher."""
    rows = [[e["role"], e["model"], e["format"], size(e["weights_bytes"]),
             size(e["model_rss_bytes"]) if e["model_rss_bytes"] else "",
             f"{e['cpu_tokens_per_s']:,.0f}" if e["cpu_tokens_per_s"] else "",
             "" if e["mean_pass1"] is None else f"{100 * e['mean_pass1']:.1f}",
             "" if e["retention"] is None else f"{e['retention']:.2f}"] for e in edge]
    text = table(["role", "model", "format", "weights", "memory (model)", "CPU tokens/s",
                  "mean pass@1 %", "retention"], rows, right={3, 4, 5, 6, 7})
    smallest = min((e for e in edge if e["role"] != "student"), key=lambda e: e["weights_bytes"],
                   default=None)
    if smallest:
        teacher = 2.0 * plan["teacher"]["total"]
        text += (f"\n\nThe student as {smallest['model']} needs {size(smallest['weights_bytes'])} of "
                 f"weights; the teacher needs {size(teacher)} in bf16 "
                 f"({teacher / smallest['weights_bytes']:,.0f}x). Memory: what loading the model "
                 "added to the serving process (weights, KV cache, buffers); CPU tokens/s: one "
                 "stream, greedy, measured by the quantize stage on this run's machine.")
    return text


def _trace_costs(cfg: Recipe, run_dir: Path, teacher_tps: float | None, devices: int) -> dict | None:
    """Cost of the current generation's traces, split by the filter verdict; a trace's cost is
    the one recorded (API prices) or, self-hosted, its share of the device-hours."""
    rd = RunDir(run_dir)
    if not rd.generate.path.is_dir():
        return None
    verdicts = {v["id"]: ("kept" if v["kept"] else v["failed"]) for v in rd.filter.read()}
    per_token = None
    if not any(cost.prices(cfg)[:2]) and teacher_tps and cfg.plan.hourly_usd is not None:
        per_token = devices * cfg.plan.hourly_usd / 3600 / teacher_tps
    groups: dict[str, dict] = defaultdict(lambda: {"traces": 0, "tokens": 0.0, "usd": 0.0})
    n = 0
    for g in current_traces(run_dir, cfg.generation_hash()):  # streamed: gigabytes of traces
        n += 1
        u = g.get("usage") or {}
        tokens = float(u.get("completion_tokens") or 0) / max(1, int(u.get("choices") or 1))
        spend = float(g.get("cost") or 0.0) if per_token is None else tokens * per_token
        key = verdicts.get(g["id"], "not filtered")
        groups[key]["traces"] += 1
        groups[key]["tokens"] += tokens
        groups[key]["usd"] += spend
    total = sum(gr["usd"] for gr in groups.values())
    kept = groups.get("kept", {}).get("traces", 0)
    return {"basis": "recorded API cost" if per_token is None else "device-hours at the teacher's throughput",
            "total_usd": total, "traces": n, "kept": kept,
            "usd_per_kept_trace": total / kept if kept else None,
            "usd_per_kept_trace_alone": groups["kept"]["usd"] / kept if kept else None,
            "by_verdict": {k: {**v, "share": v["usd"] / total if total else 0.0} for k, v in groups.items()}}


ROLE_COLORS = {"teacher": "#c05621", "base": "#9aa5b1", "student": "#2b6cb0"}
QUANTIZED_COLOR = "#38a169"     # the student's quantized variants


def _plot(entries: list[dict], quality: dict, path: Path, title: str,
          edge: list[dict] | None = None) -> Path:
    from distill.publish.plots import pyplot, save_figure
    plt = pyplot()
    priced = all(e["usd_per_m_tokens"] for e in entries)
    if edge:
        fig, (ax, mem) = plt.subplots(1, 2, figsize=(11.5, 4.4))
        _plot_memory(mem, entries, edge)
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
    benches = sorted({b for q in quality.values() for b in q if b not in ("mean", "retention")})
    markers = dict(zip(benches, "osD^v<>P*X"))
    for e in entries:
        x = e["usd_per_m_tokens"] if priced else e["flops_per_token"] / 1e9
        q = quality.get(e["role"], {})
        for b in benches:
            if b in q:
                ax.scatter(x, 100 * q[b], color=ROLE_COLORS[e["role"]], marker=markers[b], alpha=0.45, s=30)
        if q.get("mean") is not None:
            ax.scatter(x, 100 * q["mean"], color=ROLE_COLORS[e["role"]], s=140, edgecolor="black", zorder=3,
                       label=f"{e['role']} (mean)")
            offset = {"teacher": (8, 4), "base": (8, -12), "student": (8, 6)}[e["role"]]
            ax.annotate(e["role"], (x, 100 * q["mean"]), textcoords="offset points", xytext=offset,
                        fontsize=8)
    for b in benches:
        ax.scatter([], [], color="grey", marker=markers[b], label=b)
    ax.set_xscale("log")
    xs = [e["usd_per_m_tokens"] if priced else e["flops_per_token"] / 1e9 for e in entries]
    if all(xs):
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
    ax.set_xlabel("$ per million served tokens" if priced else "GFLOPs per token")
    ax.set_ylabel("pass@1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _plot_memory(ax, entries: list[dict], edge: list[dict]) -> None:
    """Mean pass@1 against the weights' size: teacher and students in bf16, the quantized
    student at each format."""
    points = [(e["role"], 2.0 * e["total"], e["mean_pass1"]) for e in entries] + \
        [(e["role"], e["weights_bytes"], e["mean_pass1"]) for e in edge if e["role"] != "student"]
    for role, nbytes, score in points:
        if score is None:
            continue
        color = ROLE_COLORS.get(role, QUANTIZED_COLOR)
        ax.scatter(nbytes / 2**30, 100 * score, color=color, s=90, edgecolor="black", zorder=3)
        ax.annotate(role.replace("student-", ""), (nbytes / 2**30, 100 * score),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("weights (GiB; teacher and students in bf16)")
    ax.set_ylabel("mean pass@1 (%)")
    ax.set_title("Quality vs memory: the student at the edge")


def _experts(cfg: Recipe, run_dir: Path) -> dict | None:
    path = _local_model(cfg.teacher.model)
    if path is None or not RunDir(run_dir).generate.path.is_dir():
        return None
    from distill.experts import by_category
    return by_category(path, iter(current_traces(run_dir, cfg.generation_hash())))


def build(cfg: Recipe, run_dir: Path, rows: list[dict]) -> dict:
    run_dir = Path(run_dir)
    plan = make_plan(cfg, run_dir, measured=_measure(cfg, run_dir))
    quality = _quality(rows)
    models_md, entries = _models_table(cfg, plan, quality)
    sc = plan["generation"]["serving_usd_per_m"]
    traces = _trace_costs(cfg, run_dir, sc["teacher_tokens_per_s"], sc["teacher_devices"])
    edge = _edge_entries(run_dir, quality)
    return {"models": entries, "models_md": models_md, "quality": quality, "traces": traces,
            "edge": edge, "edge_md": edge_text(edge, plan) if edge else None,
            "generation": plan["generation"], "experts": _experts(cfg, run_dir),
            "warnings": plan["warnings"]}


def to_markdown(e: dict, title: str) -> str:
    lines = [f"# Economics: {title}", "", "## Teacher and students", "", e["models_md"], ""]
    if e.get("edge_md"):
        lines += ["## The student at the edge", "", e["edge_md"], ""]
    t = e["traces"]
    if t:
        lines += ["## What a kept trace cost", "",
                  f"{t['traces']:,} traces cost {usd(t['total_usd'])} ({t['basis']}); {t['kept']:,} were kept: "
                  f"{usd(t['usd_per_kept_trace'])} per kept trace with the rejected ones paid for, "
                  f"{usd(t['usd_per_kept_trace_alone'])} for the kept trace alone.", ""]
        order = sorted(t["by_verdict"].items(), key=lambda kv: (kv[0] != "kept", -kv[1]["usd"]))
        lines.append(table(["verdict", "traces", "completion tokens", "cost", "share of spend"],
                           [[k, f"{v['traces']:,}", count(v["tokens"]), usd(v["usd"]), f"{100 * v['share']:.1f}%"]
                            for k, v in order], right={1, 2, 3, 4}))
        lines.append("")
    g = e["generation"]
    if g.get("projected") or g.get("actual"):
        lines += ["## Generation: projected and used", "", generation_text(g), ""]
    x = e["experts"]
    if x:
        lines += ["## Expert utilisation of the teacher, per task category", "",
                  f"{x['num_experts']} experts, top-{x['top_k']}; per layer, the share of the routed "
                  f"slots taken by the busiest quarter of the experts (balanced: "
                  f"{100 * max(1, -(-x['num_experts'] // 4)) / x['num_experts']:.0f}%), and the busiest "
                  "expert against a balanced share.", ""]
        rows = []
        for cat, s in list(x["categories"].items()) + [("all", x.get("overall"))]:
            if s:
                rows.append([cat, f"{s['tokens']:,}", " ".join(f"{100 * v:.0f}%" for v in s["top_quarter_share"]),
                             f"{s['max_over_uniform']:.2f}x", " ".join(f"{v:.2f}" for v in s["entropy"]),
                             max(s["idle_experts"])])
        lines += [table(["category", "tokens", "busiest quarter, per layer", "busiest expert",
                         "entropy per layer (1 = balanced)", "idle experts (max)"], rows,
                        right={1, 3, 5}), ""]
        lines += [f"Warning: {w}" for w in x["warnings"]] or ["No expert collapse (no layer where the "
                                                             "busiest quarter takes 75% or more)."]
        lines.append("")
    if e["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in e["warnings"]] + [""]
    lines += ["![quality versus cost](quality_vs_cost.png)", ""]
    return "\n".join(lines)


def write_economics(cfg: Recipe, run_dir: Path, rows: list[dict], report: Path) -> dict | None:
    """Writes the economics section into `report`. A model whose config cannot be read (a Hub
    id offline) leaves a one-line economics.md that says why instead of failing the report."""
    from distill.publish.card import report_title
    title = report_title(cfg)
    try:
        e = build(cfg, run_dir, rows)
    except InputError as err:
        log.warning("economics section skipped: %s", err)
        write_text(report / "economics.md", f"# Economics: {title}\n\nNot available: {err}\n")
        return None
    _plot(e["models"], e["quality"], report / "quality_vs_cost.png", f"Quality vs cost: {cfg.run.name}",
          e["edge"])
    for w in (e["experts"] or {}).get("warnings", []):
        log.warning(w)
    write_json(report / "economics.json", {k: v for k, v in e.items() if not k.endswith("_md")})
    write_text(report / "economics.md", to_markdown(e, title))
    return e
