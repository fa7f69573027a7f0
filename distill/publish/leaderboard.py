"""Leaderboard tables: reads eval scores (and per-question scores), writes CSV, Markdown and HTML.

Retention = student score / teacher score on the same benchmark, category and metric; it is
filled on student and base rows, 1.0 on teacher rows, empty where the teacher scored 0.
`truncated` is the share of the row's answers cut at the length cap, `repetitive` the share
caught in a repetition loop, and `infra_errors` the
request attempts that failed and were retried plus the gradings that failed and were done
again: what to look at first when a score does not reproduce. A benchmark scored with loader
options (a LiveCodeBench release and date window) has them listed under the tables.
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from typing import Any

from distill.eval import metrics

COLUMNS = ["model", "role", "benchmark", "category", "metric", "score", "ci_low", "ci_high", "n",
           "retention", "truncated", "repetitive", "infra_errors"]
# Then the student's quantized variants (student-q8_0, student-q4_k_m, ...), as evaluated.
ROLE_ORDER = {"teacher": 0, "base": 1, "student": 2}


def leaderboard_rows(scores: list[dict]) -> list[dict]:
    """Score rows plus retention, sorted by benchmark, category, metric, then role."""
    teacher = {(r["benchmark"], r["category"], r["metric"]): r["score"]
               for r in scores if r["role"] == "teacher"}
    rows: list[dict[str, Any]] = []
    for r in scores:
        t = teacher.get((r["benchmark"], r["category"], r["metric"]))
        ret = 1.0 if r["role"] == "teacher" else (r["score"] / t if t else None)
        rows.append({**{c: r.get(c) for c in COLUMNS}, "retention": ret,
                     # the eval stage's paired-bootstrap interval of the retention, when given
                     "retention_ci_low": r.get("retention_ci_low"),
                     "retention_ci_high": r.get("retention_ci_high"),
                     "options": r.get("options")})
    rows.sort(key=lambda r: (r["benchmark"], "/" in r["category"], r["category"], r["metric"],
                             ROLE_ORDER.get(r["role"], 3)))
    return rows


def _per_category(questions: list[dict]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(role, benchmark, category) -> {task_id: pass@1}, categories as in scores ("cat",
    "cat/sub")."""
    out: dict[tuple, dict[str, float]] = defaultdict(dict)
    for q in questions:
        cats = q.get("categories") or [q["category"]] + (
            [f"{q['category']}/{q['subcategory']}"] if q.get("subcategory") else [])
        for cat in cats:
            out[(q["role"], q["benchmark"], cat)][q["task_id"]] = q["score"]
    return out


def _paired(questions: list[dict], role: str, other: str, stat) -> dict:
    groups = _per_category(questions)
    out = {}
    for (r, bench, cat), scores in groups.items():
        ref = groups.get((other, bench, cat))
        if r != role or not ref:
            continue
        tasks = sorted(set(scores) & set(ref))
        est = stat([scores[t] for t in tasks], [ref[t] for t in tasks]) if tasks else None
        if est is not None:
            out[(bench, cat)] = est
    return out


def retention_intervals(questions: list[dict]) -> dict[tuple[str, str, str], metrics.Estimate]:
    """(role, benchmark, category) -> pass@1 retention vs the teacher for base and student,
    with a paired-bootstrap interval over the questions both answered."""
    return {(role, *k): est for role in ("base", "student")
            for k, est in _paired(questions, role, "teacher", metrics.retention).items()}


def differences(questions: list[dict], role: str = "student",
                other: str = "base") -> dict[tuple[str, str], metrics.Estimate]:
    """(benchmark, category) -> pass@1 of `role` minus `other` with a paired interval."""
    return _paired(questions, role, other, metrics.paired_difference)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def to_csv(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _fmt(r.get(c), 6) for c in columns})
    return buf.getvalue()


def pct(x) -> str:
    """A share as a percentage with one decimal ("" for None)."""
    return "" if x is None else f"{100 * x:.1f}"


def retention_interval(r: dict) -> str:
    """"[0.90, 1.02]": the paired-bootstrap interval of a student's or base's retention, or ""."""
    lo, hi = r.get("retention_ci_low"), r.get("retention_ci_high")
    if r["retention"] is None or r["role"] == "teacher" or lo is None or hi is None:
        return ""
    return f"[{lo:.2f}, {hi:.2f}]"


def retention_text(r: dict) -> str:
    """"0.96 [0.90, 1.02]": the retention with its interval when it has one."""
    if r["retention"] is None:
        return ""
    return f"{r['retention']:.2f} {retention_interval(r)}".rstrip()


def benchmark_options(rows: list[dict]) -> list[str]:
    """"livecodebench: release=release_v5, start_date=2024-08-01, ...": the loader options each
    benchmark was scored with, for the benchmarks that have any."""
    seen: dict[str, dict] = {}
    for r in rows:
        if r.get("options"):
            seen.setdefault(r["benchmark"], r["options"])
    return [f"{b}: " + ", ".join(f"{k}={v}" for k, v in opts.items()) for b, opts in seen.items()]


def to_markdown(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "",
             "Scores in %, 95% intervals in brackets; retention = score / teacher score (its 95% "
             "paired-bootstrap interval in brackets); cut = answers cut at the length cap, in %; "
             "loops = answers caught in a repetition loop, in %; infra = failed request attempts "
             "and gradings, retried.", "",
             "| model | role | benchmark | category | metric | score | 95% CI | n | retention "
             "| cut | loops | infra |",
             "|---|---|---|---|---|--:|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        ci = f"[{pct(r['ci_low'])}, {pct(r['ci_high'])}]" if r["ci_low"] is not None else ""
        infra = "" if r.get("infra_errors") is None else r["infra_errors"]
        lines.append(f"| {r['model']} | {r['role']} | {r['benchmark']} | {r['category']} | "
                     f"{r['metric']} | {pct(r['score'])} | {ci} | {r['n']} | {retention_text(r)} "
                     f"| {pct(r.get('truncated'))} | {pct(r.get('repetitive'))} | {infra} |")
    options = benchmark_options(rows)
    if options:
        lines += ["", "Scored with: " + "; ".join(options) + "."]
    return "\n".join(lines) + "\n"


# Click a header to sort by it; a second click reverses. Numbers sort as numbers; empty cells
# last. The page opens sorted when its address ends in #sort=column (ascending) or
# #sort=-column (descending), so a sorted view can be linked.
_SORT_JS = """
function sortBy(th, asc) {
  var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  th.closest("tr").querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
  th.dataset.dir = asc ? "asc" : "desc";
  var key = function (tr) {
    var cell = tr.cells[col], t = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent;
    var x = parseFloat(t);
    return t === "" ? null : (isNaN(x) ? t : x);
  };
  Array.from(body.rows).sort(function (a, b) {
    var x = key(a), y = key(b);
    if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
    var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
    return asc ? c : -c;
  }).forEach(function (tr) { body.appendChild(tr); });
}
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () { sortBy(th, th.dataset.dir !== "asc"); });
});
var wanted = decodeURIComponent(location.hash).match(/^#sort=(-?)(.+)$/);
if (wanted) {
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    if (th.dataset.col === wanted[2]) { sortBy(th, wanted[1] !== "-"); }
  });
}
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[data-dir="asc"]::after { content: " \\25B2"; }
th[data-dir="desc"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; margin: 1em 0; }
"""


def html_table(rows: list[dict], columns: list[str], shown: dict | None = None) -> str:
    """A sortable table. `shown` maps a column to a function giving the text of a value (the
    cell keeps the raw value in data-v, so it sorts by number, not by text)."""
    esc, shown = html.escape, shown or {}
    head = "".join(f'<th data-col="{esc(c)}">{esc(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                text = shown[c](v) if c in shown else (f"{v:.3f}" if isinstance(v, float) else str(v))
                cells.append(f'<td class="num" data-v="{v!r}">{esc(text)}</td>')
            else:
                cells.append(f"<td>{esc('' if v is None else str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(body) + "\n</tbody></table>\n")


def html_page(title: str, parts: list[str]) -> str:
    """One page: inline CSS and JS, nothing fetched from the network."""
    esc = html.escape
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>{esc(title)}</h1>\n" + "\n".join(parts)
            + f"\n<script>{_SORT_JS}</script>\n</body></html>\n")


def to_html(rows: list[dict], title: str) -> str:
    """The run's leaderboard as one self-contained page with a sortable table."""
    intro = ("<p>Scores in %, 95% intervals; retention = score / teacher score; truncated = "
             "answers cut at the length cap, in %; infra_errors = failed request attempts and "
             "gradings, retried. Click a column header to sort.</p>")
    options = benchmark_options(rows)
    if options:
        intro += f"<p>Scored with: {html.escape('; '.join(options))}.</p>"
    shown = [{**r, "retention 95% CI": retention_interval(r)} for r in rows]
    after = COLUMNS.index("retention") + 1
    return html_page(title, [intro, html_table(
        shown, COLUMNS[:after] + ["retention 95% CI"] + COLUMNS[after:],
        {c: pct for c in ("score", "ci_low", "ci_high", "truncated", "repetitive")})])
