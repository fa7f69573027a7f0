"""The plan as text: reads the dict of `distill.plan.make_plan`, returns Markdown-style tables a
terminal shows as they are (the report's economics section uses the same helpers)."""

from __future__ import annotations

from distill.plan.serving import GPUS


def table(headers: list[str], rows: list[list], right: set[int] | None = None) -> str:
    """A Markdown table padded to line up in a terminal too; columns in `right` align right."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = right or set()

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def count(n: float) -> str:
    """4.19e9 -> 4.19B; 1.2e6 -> 1.20M; 731 -> 731."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            x = n / div
            return f"{x:.3g}{unit}" if x < 100 else f"{x:,.0f}{unit}"
    return f"{n:.3g}"


def size(nbytes: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= div:
            return f"{nbytes / div:,.1f} {unit}"
    return f"{nbytes:.0f} B"


def usd(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"${x:,.0f}" if x >= 100 else f"${x:,.2f}" if x >= 1 else f"${x:.2g}"


def _arch(m: dict) -> str:
    kind = f"MoE {m['moe']['experts']} experts, top-{m['moe']['top_k']}" if m.get("moe") else "dense"
    return f"{m['model_type']}, {kind}, {m['layers']} layers, {m['kv_cache']}"


def _weights(m: dict) -> str:
    return ", ".join(f"{k} {size(v * 2**30)}" for k, v in m["weights_gib"].items())


def _models(plan: dict) -> str:
    t, s = plan["teacher"], plan.get("student")
    models = [t] + ([s] if s else [])
    c = plan["compute"]
    flops = [c["teacher_flops"]] + ([c["student_flops"]] if s else [])
    kv = []
    for m in models:
        line = f"{size(m['kv_bytes_per_token'])} ({m['kv_cache']})"
        if "kv_bytes_per_token_uncompressed" in m:
            line += f"; {size(m['kv_bytes_per_token_uncompressed'])} as K and V"
        kv.append(line)
    rows = [
        ["model"] + [m["name"] for m in models],
        ["architecture"] + [_arch(m) for m in models],
        ["parameters, total"] + [count(m["total"]) for m in models],
        ["active per token"] + [f"{count(m['active'])} ({count(m['matmul'])} without the input "
                                f"embedding)" if m["active"] != m["matmul"] else count(m["active"])
                                for m in models],
        ["weights"] + [_weights(m) for m in models],
        ["checkpoint format"] + [m["checkpoint"] for m in models],
        ["KV cache per token (bf16)"] + kv,
        [f"GFLOPs per token at position {c['position']:,}"] + [f"{f / 1e9:,.1f}" if f >= 1e9 else f"{f / 1e9:.3g}" for f in flops],
        ["config.json"] + [m["config"] for m in models],
    ]
    head = ["", "teacher"] + (["student"] if s else [])
    out = table(head, rows)
    if s:
        out += (f"\n\nThe teacher needs {t['total'] / s['total']:,.0f}x the student's memory "
                f"(total parameters) and {c['ratio']:,.1f}x its compute per token (active parameters).")
    pos = plan.get("student_positions")
    if pos and pos["trained"] != pos["model"]:
        out += (f"\nThe student trains at {pos['max_length']:,} tokens with max_position_embeddings "
                f"{pos['model']:,} raised to {pos['trained']:,} ("
                + (f"train.rope_scaling {pos['rope_scaling']}" if pos["rope_scaling"] else "train.max_position_embeddings")
                + "), and is saved so.")
    if s and plan.get("student_edge"):
        out += "\n\n" + _edge(plan["student_edge"], s)
    return out


EDGE_FORMATS = {"bf16": "bf16", "Q8_0": "Q8_0 (llama.cpp)", "Q4_K_M": "Q4_K_M (llama.cpp)",
                "int8": "int8 weight-only (torchao)", "int4": "int4 weight-only (torchao)"}


def _edge(e: dict, s: dict) -> str:
    """The student's weights in the formats of small machines, and its KV cache at eval."""
    kv, ctx = e["kv_bytes"], e["context"]
    rows = [[label, f"{e['weights'][k] * 8 / s['total']:.2f}", size(e["weights"][k]),
             size(e["weights"][k] + kv)] for k, label in EDGE_FORMATS.items()]
    out = (f"The student on small machines (weights; with the bf16 KV cache of one {ctx:,}-token "
           f"eval sequence, {size(kv)}):\n\n"
           + table(["format", "bits/weight", "weights", f"+ KV @ {ctx:,}"], rows, right={1, 2, 3}))
    return out + (f"\n\nThe {s['name']} at 4 bits (Q4_K_M) needs {size(e['weights']['Q4_K_M'])} "
                  f"({size(e['weights']['Q4_K_M'] + kv)} with the KV cache); the teacher needs "
                  f"{size(e['teacher_bytes'])} ({e['teacher_dtype']}).")


def _serving(plan: dict) -> str:
    ctx = plan["context"]
    want = ctx["concurrency"]
    lines = [f"Serving the teacher with vLLM: --max-model-len {ctx['max_model_len']:,}; "
             f"{want} sequences in flight (generate.max_concurrency) of ~{ctx['mean_len']:,} tokens "
             f"(prompt {ctx['prompt_tokens']:,} + completion {ctx['completion_tokens']:,}: "
             f"{ctx['completion_source']}); KV cache {ctx['kv_cache_dtype']}, "
             f"--gpu-memory-utilization {ctx['gpu_memory_utilization']:.2f}.", ""]
    rows = []
    for r in plan["serving"]:
        s, e = r["smallest"], r["enough"]
        dtype = r["dtype"] + (" *" if r["native"] else "")
        if s is None:
            rows.append([GPUS[r["gpu"]].name, dtype, "> 64", "", "", "", "", "", ""])
            continue
        rows.append([GPUS[r["gpu"]].name, dtype, s["gpus"], s["layout"], f"{s['weights_gib']:,.1f}",
                     s["kv_room_gib"], f"{s['seqs_full']:,}", f"{s['seqs_mean']:,}",
                     f"{e['gpus']} ({e['layout']})" if e else "> 64"])
    lines.append(table(["GPU", "weights", "GPUs", "layout", "weights/GPU GiB", "KV room/GPU GiB",
                        f"seqs @ {ctx['max_model_len']:,}", f"seqs @ {ctx['mean_len']:,}",
                        f"GPUs for {want} seqs"], rows, right={2, 4, 5, 6, 7}))
    lines += ["", "* the checkpoint's own format. GPUs: the fewest that start (weights plus one "
              "full-length sequence per rank); the last column: the fewest that hold every sequence "
              "in flight without preemption.", ""]
    for gpu, c in plan["commands"].items():
        n = c["layout"]["gpus"]
        lines.append(f"{GPUS[gpu].name}, {n} GPU{'s' if n > 1 else ''} ({c['layout']['layout']}, "
                     f"{c['layout']['dtype']}):")
        lines.append(f"  {c['command']}")
        lines += [f"  note: {n}" for n in c["notes"]]
    st = plan.get("student_serving")
    if st:
        lines += ["", f"The student on {GPUS[st['gpu']].name}: {st['gpus']} GPU ({st['layout']}), "
                  f"weights {size(st['weights_gib'] * 2**30)}, KV room {st['kv_room_gib']} GiB: "
                  f"{st['seqs_mean']:,} sequences of {ctx['mean_len']:,} tokens at once."]
    return "\n".join(lines)


def generation_text(gen: dict) -> str:
    p_in, p_out = gen["price_per_m"]["input"], gen["price_per_m"]["output"]
    n = f"{gen['prompts']:,}" if gen["prompts"] else "an unknown number of"
    lines = [f"Generation: {n} prompts x {gen['samples_per_prompt']} sample(s) each (prompts: "
             f"{gen['prompts_source']})."]
    tps = gen["tokens_per_s"]
    hw = f"{gen['devices']} x {gen['hardware']}" + (f" at ${gen['hourly_usd']}/h" if gen["hourly_usd"] is not None else "")
    hw += f"; projected at {gen['tokens_per_s_source']}" if tps else "; throughput unknown"
    rows = []
    proj, act = gen.get("projected"), gen.get("actual")
    cols = [c for c in (proj, act) if c]

    def row(label, key, fmt):
        return [label] + [fmt(c.get(key)) if c.get(key) is not None else "n/a" for c in cols]
    rows.append(row("traces", "samples", lambda x: f"{x:,}"))
    rows.append(row("input tokens", "input_tokens", count))
    rows.append(row("output tokens", "output_tokens", count))
    if act and act.get("reasoning_tokens"):
        rows.append(["of which reasoning"] + ([""] if proj else []) + [count(act["reasoning_tokens"])])
    if p_in or p_out:
        rows.append(row(f"API at ${p_in}/M in, ${p_out}/M out", "api_usd", usd))
    if act:
        rows.append(["cost recorded by the run"] + ([""] if proj else []) + [usd(act["recorded_usd"])])
    if proj:
        proj = {**proj, "tokens_per_s": tps}
        cols[0] = proj
    rows.append(row("teacher tokens/s", "tokens_per_s", lambda x: f"{x:,.0f}"))
    rows.append(row(f"device-hours ({hw})", "device_hours", lambda x: f"{x:,.0f}" if x >= 100 else f"{x:.3g}"))
    rows.append(row("self-hosted cost", "self_hosted_usd", usd))
    head = [""] + (["projected"] if proj else []) + (["this run"] if act else [])
    if cols:
        lines += ["", table(head, rows, right=set(range(1, len(head))))]
    sc = gen["serving_usd_per_m"]
    hw = gen["hardware"]
    rows = []
    if sc["teacher_api"]:
        rows.append(["teacher, API (generate.price_per_m_output)", usd(sc["teacher_api"]), ""])
    rows.append([f"teacher, self-hosted on {sc['teacher_devices']} x {hw}", usd(sc["teacher_self_hosted"]),
                 _tps(sc["teacher_tokens_per_s"], sc["teacher_tokens_per_s_source"])])
    rows.append([f"student, self-hosted on {sc['student_devices']} x {hw}", usd(sc["student"]),
                 _tps(sc["student_tokens_per_s"], sc["student_tokens_per_s_source"])])
    lines += ["", "Serving cost per million generated tokens"
              + (f" (at ${gen['hourly_usd']}/device-hour):" if gen["hourly_usd"] is not None
                 else " (set plan.hourly_usd to price self-hosting):"), "",
              table(["", "$ / M tokens", "throughput"], rows, right={1})]
    return "\n".join(lines)


def _tps(tps: float | None, source: str | None) -> str:
    return f"{tps:,.0f} tokens/s ({source})" if tps else "unknown (plan.*_tokens_per_s)"


def format_plan(plan: dict, title: str = "") -> str:
    parts = [f"# Plan{': ' + title if title else ''}", "", _models(plan), "", _serving(plan)]
    if plan.get("generation"):
        parts += ["", generation_text(plan["generation"])]
    if plan["warnings"]:
        parts += ["", "Warnings:"] + [f"- {w}" for w in plan["warnings"]]
    return "\n".join(parts) + "\n"
