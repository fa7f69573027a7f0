"""The leaderboard across runs (`distill leaderboard RUN_DIR...`): reads each run directory's
recipe.yaml, eval/scores.json, eval/questions.json and manifests, writes into one folder
leaderboard.csv (every score row of every run, long form), leaderboard.md and leaderboard.html
(one line per model, a column per benchmark; retention per category) and three plots:
retention_by_category.png, score_vs_size.png, quality_vs_cost.png.

A teacher or base model shared by several runs and scored the same in each appears once, with
the runs it came from. Sizes are counted from safetensors headers (publish/lineage.py), so a
model known only by its Hub id has no size and is left off the size plot.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from distill.config import Recipe, load_recipe
from distill.errors import InputError
from distill.eval.metrics import Estimate
from distill.publish import leaderboard, lineage
from distill.records import RunDir, write_text

LONG_COLUMNS = ["run", "model", "role", "teacher", "method", "adapter", "params", "benchmark",
                "category", "metric", "score", "ci_low", "ci_high", "n", "retention",
                "retention_low", "retention_high", "kept", "gen_cost", "gen_tokens",
                "train_seconds"]


@dataclass
class Run:
    name: str
    path: Path
    cfg: Recipe
    rows: list[dict]                                   # leaderboard rows, with retention
    retention: dict[tuple[str, str, str], Estimate]    # (role, benchmark, category) -> interval
    params: dict[str, int | None]                      # role -> parameters
    kept: int | None
    cost: dict
    train_seconds: float | None
    method: str


def load_run(path: str | Path) -> Run:
    path = Path(path)
    recipe = path / "recipe.yaml"
    if not recipe.is_file():
        raise InputError("not a run directory: it has no recipe.yaml", file=str(path))
    cfg = load_recipe(recipe)
    rd = RunDir(path)
    evaluated = rd.require("eval", complete=True)
    scores = evaluated.read_json("scores.json")
    questions = evaluated.read_json("questions.json") \
        if (evaluated.path / "questions.json").exists() else []
    train = rd.train.manifest() or {}
    student = lineage.count_parameters(rd.train.path / "model")
    # A distilled student has its base's architecture: a base known only by its Hub id
    # takes the student's count.
    base = lineage.count_parameters(cfg.train.student) or student
    dataset = rd.dataset.is_complete()
    rows = leaderboard.leaderboard_rows(scores)
    if cfg.run.rehearsal:  # stand-in models: never to be read as results beside real runs
        rows = [{**r, "model": f"{r['model']} [rehearsal]"} for r in rows]
    return Run(name=cfg.run.name, path=path, cfg=cfg, rows=rows,
               retention=leaderboard.retention_intervals(questions),
               params={"student": student, "base": base,
                       "teacher": lineage.count_parameters(cfg.teacher.model)},
               kept=(rd.dataset.manifest() or {}).get("records") if dataset else None,
               cost=lineage.generation_cost(path), train_seconds=train.get("train_seconds"),
               method=train.get("method") or cfg.train.method)


def long_rows(runs: list[Run]) -> list[dict]:
    """Every score row of every run with the run's facts; a teacher or base row that two runs
    share (same model, benchmark, category, metric, n and score) is kept once."""
    shared: dict[tuple, dict] = {}
    students: list[dict] = []
    for run in runs:
        for r in run.rows:
            est = run.retention.get((r["role"], r["benchmark"], r["category"]))
            student = r["role"] == "student"
            row = {**r, "run": run.name, "teacher": run.cfg.teacher.model,
                   "method": run.method if student else "",
                   "adapter": run.cfg.train.adapter if student else "",
                   "params": run.params.get(r["role"]),
                   "retention_low": est.ci_low if est else None,
                   "retention_high": est.ci_high if est else None,
                   "kept": run.kept if student else None,
                   "gen_cost": run.cost["cost"] if student else None,
                   "gen_tokens": run.cost["completion_tokens"] if student else None,
                   "train_seconds": run.train_seconds if student else None}
            if student:
                students.append(row)
                continue
            key = (r["role"], r["model"], r["benchmark"], r["category"], r["metric"], r["n"],
                   round(r["score"], 6))
            if key in shared:
                shared[key]["run"] += f", {run.name}"
            else:
                shared[key] = row
    return list(shared.values()) + students


def _benchmarks(rows: list[dict]) -> list[str]:
    return sorted({r["benchmark"] for r in rows})


def model_rows(rows: list[dict]) -> list[dict]:
    """One line per model (a run's student, each distinct teacher and base): pass@1 on each
    benchmark's overall category, its interval, and the mean retention over benchmarks."""
    lines: dict[tuple, dict] = {}
    for r in rows:
        if r["metric"] != "pass@1" or "/" in r["category"]:
            continue
        key = (r["role"], r["model"], r["run"] if r["role"] == "student" else "")
        line = lines.setdefault(key, {
            "model": r["model"], "role": r["role"], "run": r["run"], "teacher": r["teacher"],
            "method": r["method"], "params": r["params"], "kept": r["kept"],
            "gen_cost": r["gen_cost"], "gen_tokens": r["gen_tokens"],
            "train_seconds": r["train_seconds"], "_retention": []})
        line[r["benchmark"]] = r["score"]
        line[f"{r['benchmark']} CI"] = (f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
                                        if r["ci_low"] is not None else "")
        if r["role"] != "teacher" and r["retention"] is not None:
            line["_retention"].append(r["retention"])
    out = []
    for line in lines.values():
        ret = line.pop("_retention")
        line["mean_retention"] = statistics.fmean(ret) if ret else None
        out.append(line)
    benches = _benchmarks(rows)
    out.sort(key=lambda l: -statistics.fmean([l.get(b) or 0.0 for b in benches]))
    return out


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _model_columns(rows: list[dict]) -> list[str]:
    benches = _benchmarks(rows)
    return (["model", "role", "run", "teacher", "method", "params"]
            + [c for b in benches for c in (b, f"{b} CI")]
            + ["mean_retention", "kept", "gen_cost", "gen_tokens", "train_seconds"])


def _category_rows(rows: list[dict]) -> list[dict]:
    """Retention of each student (and base) per benchmark and category, with its interval."""
    out = [{"model": r["model"], "role": r["role"], "run": r["run"], "benchmark": r["benchmark"],
            "category": r["category"], "retention": r["retention"],
            "95% CI": (f"[{r['retention_low']:.2f}, {r['retention_high']:.2f}]"
                       if r["retention_low"] is not None else "")}
           for r in rows if r["role"] != "teacher" and r["metric"] == "pass@1"
           and r["retention"] is not None]
    return sorted(out, key=lambda r: (r["benchmark"], "/" in r["category"], r["category"],
                                      -r["retention"]))


def to_markdown(models: list[dict], categories: list[dict], columns: list[str], title: str) -> str:
    def cell(c, v):
        if v is None:
            return ""
        if c == "params":
            return _size(v)
        if c in ("mean_retention", "retention"):
            return f"{v:.2f}"
        if c == "gen_cost":
            return f"${v:.2f}"
        if c == "train_seconds":
            return f"{v / 60:.1f} min"
        if isinstance(v, float):
            return f"{100 * v:.1f}"
        return str(v)

    lines = [f"# {title}", "",
             "pass@1 in % on each benchmark (95% interval beside it); mean retention = mean over "
             "benchmarks of score / teacher score; cost = the teacher's bill at the recipe's "
             "prices.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, m.get(c)) for c in columns) + " |" for m in models]
    lines += ["", "## Retention per category", "",
              "| model | role | run | benchmark | category | retention | 95% CI |",
              "|---|---|---|---|---|--:|---|"]
    lines += [f"| {r['model']} | {r['role']} | {r['run']} | {r['benchmark']} | {r['category']} "
              f"| {r['retention']:.2f} | {r['95% CI']} |" for r in categories]
    return "\n".join(lines) + "\n"


PLOTS = ("retention_by_category.png", "score_vs_size.png", "quality_vs_cost.png")


def to_html(models: list[dict], categories: list[dict], columns: list[str], title: str) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    shown = {c: pct for c in columns if c not in ("params", "mean_retention", "kept",
                                                  "gen_cost", "gen_tokens", "train_seconds")}
    shown.update(params=_size, mean_retention=lambda v: f"{v:.2f}", gen_cost=lambda v: f"${v:.2f}",
                 train_seconds=lambda v: f"{v / 60:.1f} min")
    parts = ["<p>pass@1 in %, 95% intervals beside each score; mean retention = mean over "
             "benchmarks of score / teacher score. Click a column header to sort.</p>",
             leaderboard.html_table(models, columns, shown),
             "<h2>Retention per category</h2>",
             leaderboard.html_table(categories, ["model", "role", "run", "benchmark", "category",
                                                 "retention", "95% CI"],
                                    {"retention": lambda v: f"{v:.2f}"})]
    parts += [f'<img src="{p}" alt="{p[:-4]}">' for p in PLOTS]
    return leaderboard.html_page(title, parts)


def write_leaderboard(run_dirs: Sequence[str | Path], out: Path, title: str = "Leaderboard") -> list[Path]:
    from distill.publish import plots

    if not run_dirs:
        raise InputError("name at least one run directory")
    runs = [load_run(p) for p in run_dirs]
    rows = long_rows(runs)
    models, categories, columns = model_rows(rows), _category_rows(rows), _model_columns(rows)
    out = Path(out)
    written = [out / "leaderboard.csv", out / "leaderboard.md", out / "leaderboard.html"]
    write_text(written[0], leaderboard.to_csv(rows, LONG_COLUMNS))
    write_text(written[1], to_markdown(models, categories, columns, title))
    write_text(written[2], to_html(models, categories, columns, title))
    written.append(plots.plot_category_retention(rows, out / PLOTS[0]))
    written.append(plots.plot_score_vs_size(rows, out / PLOTS[1]))
    written.append(plots.plot_quality_vs_cost(models, out / PLOTS[2]))
    return written
