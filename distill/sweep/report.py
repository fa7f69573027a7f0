"""The distillation map of a sweep: reads each variant's run directory (eval/scores.json,
eval/questions.json, report/economics.json, the train and dataset manifests), writes
<sweep_dir>/report/map.md, map.csv, map.json, one plot per swept key (map_<key>.png) and
map_cost.png.

One row per variant, benchmark and category, all of pass@1:
- the student's score, its interval and its retention exactly as the variant's eval/scores.json
  has them, and the teacher's score; the retention's paired-bootstrap interval comes from the
  variant's eval/questions.json, as the variant's own report draws it
  (`leaderboard.retention_intervals`);
- the paired comparison with the reference variant's student on the questions both answered
  (`metrics.compare`): the difference with its paired-bootstrap interval, the exact McNemar
  p-value, the questions gained and lost; `significant` when the interval excludes 0;
- what the variant's student cost: the training examples (train manifest `records`), the kept
  traces, the teacher's $ per kept trace with the rejected traces paid for (economics.json),
  the data's $ (the two multiplied), the whole generation's $ and the training time.

A variant whose evaluation has not finished has no rows; map.md lists it as pending.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import InputError
from distill.eval import metrics
from distill.publish import leaderboard
from distill.plan.text import table, usd
from distill.records import RunDir, write_json, write_text


@dataclass(frozen=True)
class Variant:
    name: str                 # "train.student=toy:student-l,train.max_examples=500"
    run_dir: Path             # a finished run directory (evaluate and publish done)
    values: dict[str, Any]    # swept key -> this variant's value


ROW_COLUMNS = ["benchmark", "category", "n", "score", "ci_low", "ci_high", "teacher_score",
               "retention", "retention_ci_low", "retention_ci_high", "reference", "difference",
               "difference_ci_low", "difference_ci_high", "paired_n", "p_value", "gained", "lost",
               "significant", "train_examples", "kept_traces", "usd_per_kept_trace", "data_usd",
               "generation_usd", "cost_basis", "train_seconds", "method"]


def swept_keys(variants: list[Variant]) -> list[str]:
    """The swept keys, in the order the variants name them."""
    return list(dict.fromkeys(k for v in variants for k in v.values))


def columns(variants: list[Variant]) -> list[str]:
    """The columns of map.csv: the variant, its swept values, then ROW_COLUMNS."""
    return ["variant", *swept_keys(variants), *ROW_COLUMNS]


def finished(variant: Variant) -> bool:
    """Whether the variant's evaluation completed (its scores are final)."""
    ev = RunDir(variant.run_dir).eval
    return ev.is_complete() and (ev.path / "scores.json").exists()


def _reference(variants: list[Variant], reference: str) -> Variant:
    names = [v.name for v in variants]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"two variants are named {twice[0]!r}")
    for v in variants:
        if v.name == reference:
            return v
    raise InputError(f"the reference {reference!r} is not a variant of this sweep; its variants: "
                     + ", ".join(names), key="reference")


def _questions(variant: Variant) -> list[dict]:
    ev = RunDir(variant.run_dir).eval
    return ev.read_json("questions.json") if (ev.path / "questions.json").exists() else []


def _student_scores(questions: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """(benchmark, category) -> {task_id: the student's pass@1}, categories as in scores.json
    ("reasoning", "reasoning/carries=2")."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for q in questions:
        if q["role"] != "student":
            continue
        cats = q.get("categories") or [q["category"]] + (
            [f"{q['category']}/{q['subcategory']}"] if q.get("subcategory") else [])
        for cat in cats:
            out.setdefault((q["benchmark"], cat), {})[q["task_id"]] = q["score"]
    return out


def _versus(mine: dict[str, float] | None, ref: dict[str, float] | None) -> dict[str, Any]:
    """The student against the reference's student on the questions both answered."""
    tasks = sorted(set(mine) & set(ref)) if mine and ref else []
    if not mine or not ref or not tasks:
        return dict.fromkeys(("difference", "difference_ci_low", "difference_ci_high",
                              "paired_n", "p_value", "gained", "lost", "significant"))
    c = metrics.compare([mine[t] for t in tasks], [ref[t] for t in tasks], tasks)
    d = c.difference
    return {"difference": d.value, "difference_ci_low": d.ci_low, "difference_ci_high": d.ci_high,
            "paired_n": d.n, "p_value": c.p_value, "gained": len(c.gained), "lost": len(c.lost),
            "significant": d.ci_low > 0 or d.ci_high < 0}


def _costs(run_dir: Path) -> dict[str, Any]:
    """What the variant's student cost, from its manifests and report/economics.json."""
    rd = RunDir(run_dir)
    train = rd.train.manifest() or {}
    econ_file = rd.report / "economics.json"
    traces = (json.loads(econ_file.read_text()).get("traces") or {}) if econ_file.exists() else {}
    examples, per_trace = train.get("records"), traces.get("usd_per_kept_trace")
    return {"train_examples": examples,
            "kept_traces": (rd.dataset.manifest() or {}).get("records", traces.get("kept")),
            "usd_per_kept_trace": per_trace,
            # The teacher's bill for the traces this student trained on: a data-size sweep
            # trains on a share of one generation, so its whole bill would be the same for all.
            "data_usd": per_trace * examples if per_trace is not None and examples else None,
            "generation_usd": traces.get("total_usd"), "cost_basis": traces.get("basis"),
            "train_seconds": train.get("train_seconds"), "method": train.get("method")}


def map_rows(variants: list[Variant], reference: str) -> list[dict]:
    """One row per finished variant, benchmark and category (pass@1; see the module docstring),
    sorted by benchmark and category, the variants in the order given."""
    ref = _reference(variants, reference)
    ref_scores = _student_scores(_questions(ref)) if finished(ref) else {}
    keys = swept_keys(variants)
    rows: list[dict] = []
    for v in variants:
        if not finished(v):
            continue
        scores = [r for r in RunDir(v.run_dir).eval.read_json("scores.json")
                  if r["metric"] == "pass@1"]
        questions = _questions(v)
        intervals = leaderboard.retention_intervals(questions)
        mine = _student_scores(questions)
        teacher = {(r["benchmark"], r["category"]): r["score"] for r in scores
                   if r["role"] == "teacher"}
        costs = _costs(v.run_dir)
        for r in scores:
            if r["role"] != "student":
                continue
            where = (r["benchmark"], r["category"])
            t = teacher.get(where)
            ret = r["retention"] if "retention" in r else (r["score"] / t if t else None)
            est = intervals.get(("student", *where))
            low = est.ci_low if est else r.get("retention_ci_low")
            high = est.ci_high if est else r.get("retention_ci_high")
            rows.append({"variant": v.name, **{k: v.values.get(k) for k in keys},
                         "benchmark": r["benchmark"], "category": r["category"], "n": r["n"],
                         "score": r["score"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                         "teacher_score": t, "retention": ret,
                         "retention_ci_low": low if ret is not None else None,
                         "retention_ci_high": high if ret is not None else None,
                         "reference": ref.name, **_versus(mine.get(where), ref_scores.get(where)),
                         **costs})
    rows.sort(key=lambda r: (r["benchmark"], "/" in r["category"], r["category"]))
    return rows

# ------------------------------------------------------------------ map.md

def _label(row: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or row["variant"]


def _ret(r: dict) -> str:
    if r["retention"] is None:
        return "n/a (teacher 0)"
    if r["retention_ci_low"] is None:
        return f"{r['retention']:.2f}"
    return f"{r['retention']:.2f} [{r['retention_ci_low']:.2f}, {r['retention_ci_high']:.2f}]"


def _versus_text(r: dict) -> str:
    if r["variant"] == r["reference"]:
        return "reference"
    if r["difference"] is None:
        return ""
    mark = " *" if r["significant"] else ""
    return (f"{100 * r['difference']:+.1f} [{100 * r['difference_ci_low']:+.1f}, "
            f"{100 * r['difference_ci_high']:+.1f}]{mark}")


def _cost_measure(rows: list[dict]) -> tuple[str, str]:
    """What the data cost is counted in: dollars when the teacher was priced, else examples."""
    if any((r["data_usd"] or 0) > 0 for r in rows):
        return "data_usd", "of teacher data"
    return "train_examples", "training examples"


def _amount(r: dict, measure: str) -> str:
    v = r[measure]
    return usd(v) if measure == "data_usd" else f"{v:,}"


def _sentences(rows: list[dict], keys: list[str], reference: str) -> list[str]:
    """What one category's rows say: each variant's retention, the variants that differ from
    the reference, and the cheapest variant that is not below it."""
    label = {r["variant"]: _label(r, keys) for r in rows}
    r0 = rows[0]
    out = [f"{r0['benchmark']} {r0['category']}: retention "
           + "; ".join(f"{_ret(r)} at {label[r['variant']]}" for r in rows) + "."]
    above = [label[r["variant"]] for r in rows if r["significant"] and r["difference"] > 0]
    below = [label[r["variant"]] for r in rows if r["significant"] and r["difference"] < 0]
    if above or below:
        out += [f"{side} the reference at the 5% level: " + "; ".join(names) + "."
                for side, names in (("Above", above), ("Below", below)) if names]
    elif any(r["difference"] is not None for r in rows):
        out.append("No variant differs from the reference at the 5% level.")
    measure, unit = _cost_measure(rows)
    ref = next((r for r in rows if r["variant"] == reference), None)
    level = [r for r in rows if r["difference"] is not None and r[measure]
             and not (r["significant"] and r["difference"] < 0)]
    if ref is not None and ref[measure] and level:
        cheap = min(level, key=lambda r: r[measure])
        if cheap[measure] < ref[measure]:
            out.append(f"Not below the reference with the least data: {label[cheap['variant']]}, "
                       f"{_amount(cheap, measure)} {unit} against the reference's "
                       f"{_amount(ref, measure)} ({cheap[measure] / ref[measure]:.2g}x).")
    return out


def _table(rows: list[dict], keys: list[str]) -> str:
    head = [*(keys or ["variant"]), "n", "pass@1 %", "teacher %", "retention [95%]",
            "vs reference, pts [95%]", "p", "+/-", "examples", "$ / kept trace", "data $",
            "train time"]
    lines = []
    for r in rows:
        is_ref = r["variant"] == r["reference"]
        lines.append([*([r[k] for k in keys] or [r["variant"]]), r["n"],
                      f"{100 * r['score']:.1f}",
                      "" if r["teacher_score"] is None else f"{100 * r['teacher_score']:.1f}",
                      _ret(r), _versus_text(r),
                      "" if r["p_value"] is None or is_ref else f"{r['p_value']:.3g}",
                      "" if r["gained"] is None or is_ref else f"+{r['gained']}/-{r['lost']}",
                      "" if r["train_examples"] is None else f"{r['train_examples']:,}",
                      "" if r["usd_per_kept_trace"] is None else usd(r["usd_per_kept_trace"]),
                      "" if r["data_usd"] is None else usd(r["data_usd"]),
                      "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f} s"])
    first = max(1, len(keys))
    counts = {i for i, k in enumerate(keys)
              if all(isinstance(r[k], (int, float)) and not isinstance(r[k], bool) for r in rows)}
    return table(head, lines, right=counts | set(range(first, first + 3))
                 | set(range(first + 5, len(head))))


def to_markdown(title: str, variants: list[Variant], reference: str, rows: list[dict],
                pending: list[Variant], plots: list[str]) -> str:
    keys = swept_keys(variants)
    swept = "; ".join(
        f"`{k}` ({', '.join(str(v) for v in dict.fromkeys(x.values.get(k) for x in variants))})"
        for k in keys)
    lines = [f"# Distillation map: {title}", "",
             f"Swept: {swept or 'nothing'}. Reference: `{reference}`. "
             f"{len(variants) - len(pending)} of {len(variants)} variants evaluated.", "",
             "pass@1 of the distilled student; retention = its pass@1 / the teacher's on the "
             "same questions, 95% paired-bootstrap interval in brackets; vs reference = its "
             "pass@1 minus the reference student's on the questions both answered, in points, "
             "95% paired-bootstrap interval, * where the interval excludes 0; p = exact McNemar "
             "on the questions that flipped, +/- = questions gained / lost against the "
             "reference. $ / kept trace = the teacher's bill per kept trace with the rejected "
             "traces paid for; data $ = that times the training examples.", ""]
    if pending:
        lines += ["## Pending", "", "Not evaluated yet, so not in the tables or plots:", ""]
        lines += [f"- `{v.name}` ({v.run_dir})" for v in pending] + [""]
        if any(v.name == reference for v in pending):
            lines += ["The reference is among them: no variant is compared with it yet.", ""]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["category"]), []).append(r)
    for (bench, cat), group in groups.items():
        lines += [f"## {bench}: {cat}", "", *_sentences(group, keys, reference), "",
                  _table(group, keys), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def plot_name(key: str) -> str:
    """map_train_max_examples.png for train.max_examples."""
    return "map_" + re.sub(r"[^A-Za-z0-9_-]", "_", key) + ".png"


def write_map(sweep_dir: Path, variants: list[Variant], reference: str) -> Path:
    """Writes <sweep_dir>/report/: map.md, map.csv, map.json and the plots; returns map.md."""
    from distill.publish import train_plots
    from distill.sweep import map_plots
    from distill.tracking import read_log_history

    rows = map_rows(variants, reference)
    keys = swept_keys(variants)
    pending = [v for v in variants if not finished(v)]
    out = Path(sweep_dir) / "report"
    write_text(out / "map.csv", leaderboard.to_csv(rows, columns(variants)))
    write_json(out / "map.json", {
        "swept": keys, "reference": reference,
        "variants": [{"name": v.name, "run_dir": str(v.run_dir), "values": v.values,
                      "finished": v not in pending} for v in variants],
        "rows": rows})
    plots = []
    if rows:
        plots = [map_plots.plot_key(rows, keys, key, out / plot_name(key)).name for key in keys]
        plots.append(map_plots.plot_cost(rows, out / "map_cost.png").name)
    trained = train_plots.plot_training({v.name: read_log_history(v.run_dir) for v in variants},
                                        out / "map_training.png", f"Training: {Path(sweep_dir).name}")
    if trained:
        plots.append(trained.name)
    path = out / "map.md"
    write_text(path, to_markdown(Path(sweep_dir).name, variants, reference, rows, pending, plots))
    return path
