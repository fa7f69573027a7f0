"""The whole pipeline through the CLI on the toy world: the report holds teacher, base and
student rows per benchmark and category, and the distilled student beats its base."""

import csv
import json
import subprocess
import sys

# The demo's recipe with fewer eval questions: the student must learn as much as in the demo.
OVERRIDES = ["eval.limit=40"]


def test_run_smoke_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "distill.cli", "run", "smoke", "--run-dir", str(run_dir)]
    for o in OVERRIDES:
        args += ["-o", o]
    r = subprocess.run(args, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for stage in ["prompts", "generate", "filter", "dataset", "train", "quantize", "eval", "publish"]:
        assert (run_dir / stage / "_SUCCESS").exists(), stage
    report = run_dir / "report"
    for name in ["leaderboard.csv", "leaderboard.md", "leaderboard.html", "retention.png", "README.md",
                 "economics.md", "economics.json", "quality_vs_cost.png"]:
        assert (report / name).stat().st_size > 0, name
    assert "## What a kept trace cost" in (report / "economics.md").read_text()
    rows = list(csv.DictReader(open(report / "leaderboard.csv")))
    assert list(rows[0]) == ["model", "role", "benchmark", "category", "metric", "score",
                             "ci_low", "ci_high", "n", "retention", "truncated", "repetitive",
                             "infra_errors"]
    top = {(r["role"], r["benchmark"]): r for r in rows
           if r["metric"] == "pass@1" and "/" not in r["category"]}
    for bench, category in [("toy_arith", "reasoning"), ("toy_code", "coding")]:
        teacher, base, student = (top[(role, bench)] for role in ("teacher", "base", "student"))
        assert student["category"] == category
        assert float(teacher["score"]) >= 0.8, teacher
        assert float(student["score"]) >= float(base["score"]) + 0.3, (base, student)
        assert student["retention"] != "" and 0 < float(student["retention"]) <= 1.5
        assert int(student["n"]) == 40
        # The student at the edge: each quantized variant scored on the same 40 questions with
        # the same sampling. Measured on all 846 toy_arith eval questions with a weak student
        # (87.4%): F16, Q8_0 and int8 within 0.3 points of it, Q4_K_M 3 points below, int4 (HQQ)
        # 15 (int4 lost 3 points of a 97.8% student); one question of 40 is 2.5 points. The
        # seeded demo's student on these 40: 87.5, Q4_K_M 82.5, int4 62.5, the others 87.5.
        drops = {"student-f16": 0.075, "student-q8_0": 0.075, "student-int8": 0.075,
                 "student-q4_k_m": 0.2, "student-int4": 0.35}
        for role, drop in drops.items():
            q = top[(role, bench)]
            assert int(q["n"]) == 40 and float(q["score"]) >= float(student["score"]) - drop, q
    variants = json.loads((run_dir / "quantize" / "variants.json").read_text())
    assert [v["role"] for v in variants] == ["student", "student-f16", "student-q8_0",
                                             "student-q4_k_m", "student-int8", "student-int4"]
    assert all(v["export_s"] > 0 for v in variants[1:]), variants   # each export timed
    edge = (report / "edge.md").read_text()
    assert "smoke-distilled-Q4_K_M" in edge and "vs unquantized" in edge
    assert "## Quantized variants" in (report / "README.md").read_text()

    # A re-run resumes: every stage is complete, so nothing is generated or trained again.
    r2 = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (run_dir / "generate" / "_SUCCESS").read_text().count('"new_samples": 0') == 1
