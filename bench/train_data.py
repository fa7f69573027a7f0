"""Train data preparation at scale: the time and peak memory to load a kept set (the filter's
Parquet shards) and tokenize it for SFT with a real tokenizer and chat template, with 1 and 2
tokenizing processes, as the train stage does it (distill/train/data.py: the Arrow copy, then
`Dataset.map` cached to Arrow).

    PYTHONPATH=. .venv/bin/python bench/train_data.py --run-dir RUN [--rows 100000] \
        [--procs 1,2] [--tokenizer ../shared/data/tokenizers/Qwen2.5-Math-7B]

RUN is a run directory whose dataset/ is complete (bench/scale.py leaves one per size, e.g.
/tmp/distill-scale/n100000-s0/run). `--rows` takes the first rows of it (a new kept set of
that many rows in a temporary run directory, so the cache starts cold). Each configuration
runs in a fresh process with a cold cache: wall time, CPU time and the peak RSS of the process
tree (sampled with psutil every 0.1 s; the map's workers included) and its private part (RSS
less file-backed pages: the memory-mapped Arrow files count in every process that touched
them), then the same call again
in another fresh process, which reads the caches (what every other rank and every re-run
pays). Prints a Markdown table; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
t0 = time.time()
import distill.train.data as data
from distill.records import RunDir
from transformers import AutoTokenizer
run, tok_path, procs, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data.num_proc = lambda rows: procs if procs > 1 else None
tok = AutoTokenizer.from_pretrained(tok_path)
stage = RunDir(run).dataset
t1 = time.time()
ds, root = data.source_dataset(stage, RunDir(run).train.path / "cache")
t2 = time.time()
out, dropped = data.tokenize(ds, root, tok, end_of_turn="<|im_end|>", max_length=max_length,
                             method="sft", stop_ids=[])
t3 = time.time()
import pyarrow.compute as pc
tokens = pc.sum(pc.list_value_length(out.data.column("input_ids"))).as_py()   # no rows loaded
print(json.dumps({"rows": len(ds), "kept_rows": len(out), "dropped": dropped, "import_s": t1 - t0,
                  "load_s": t2 - t1, "tokenize_s": t3 - t2, "tokens": tokens}))
'''


def _subset(src: Path, rows: int, dst: Path) -> None:
    """A run directory whose dataset/ holds the first `rows` rows of `src`'s."""
    from distill.records import RunDir
    n = 0
    with RunDir(dst).dataset.writer() as w:
        for rec in RunDir(src).dataset.read():
            w.write(rec)
            n += 1
            if n >= rows:
                break
    RunDir(dst).dataset.complete(records=n)


def _measure(cmd: list[str]) -> dict:
    import psutil
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"})
    peak, private, stop = [0], [0], threading.Event()

    def sample():
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                mems = [x.memory_info() for x in [p, *p.children(recursive=True)] if x.is_running()]
                peak[0] = max(peak[0], sum(m.rss for m in mems))
                # without file-backed pages (the memory-mapped Arrow files, counted once per
                # process that touched them, and dropped by the kernel under pressure)
                private[0] = max(private[0], sum(m.rss - m.shared for m in mems))
            except psutil.Error:
                pass
            time.sleep(0.1)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    stop.set()
    wall = time.time() - t0
    if proc.returncode:
        raise SystemExit(f"child failed:\n{err[-3000:]}")
    import resource
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": round(wall, 1),
            "peak_rss_mib": round(peak[0] / 2**20), "peak_private_mib": round(private[0] / 2**20),
            "cpu_total_s": cpu.ru_utime + cpu.ru_stime}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=0, help="first rows only (0: all)")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--tokenizer", default=str(ROOT.parent / "shared/data/tokenizers/Qwen2.5-Math-7B"))
    ap.add_argument("--max-length", type=int, default=32768)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = []
    cpu_before = 0.0
    for procs in [int(p) for p in a.procs.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="train-data-"))
        try:
            run = tmp / "run"
            if a.rows:
                _subset(a.run_dir, a.rows, run)
            else:
                (run / "dataset").mkdir(parents=True)
                for item in (a.run_dir / "dataset").iterdir():
                    os.symlink(item, run / "dataset" / item.name)
            cmd = [sys.executable, "-c", CHILD, str(run), a.tokenizer, str(procs), str(a.max_length)]
            for kind in ("cold", "cached"):
                r = _measure(cmd)
                r["cpu_s"], cpu_before = round(r["cpu_total_s"] - cpu_before, 1), r["cpu_total_s"]
                rows.append({"procs": procs, "run": kind, **r})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n# train data preparation ({os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"tokenizer {Path(a.tokenizer).name}, SFT, max_length {a.max_length})\n")
    print("| rows | procs | run | load s | tokenize s | wall s | CPU s | peak RSS MiB | private MiB | rows/s (tokenize) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = r["rows"] / r["tokenize_s"] if r["tokenize_s"] > 0 else float("nan")
        print(f"| {r['rows']:,} | {r['procs']} | {r['run']} | {r['load_s']:.1f} | {r['tokenize_s']:.1f} | "
              f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:,} | {r['peak_private_mib']:,} | "
              f"{rate:,.0f} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": {"cores": os.cpu_count()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
