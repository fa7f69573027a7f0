"""What a resumed generate stage reads before it sends its first request.

A re-run must know which samples are stored. Each generate shard carries an index
(`part-N.jsonl.idx`: id, prompt id, generation hash, cost, finish reason and the record's end
offset), so a resume reads a few dozen bytes per sample instead of parsing every trace. This
writes N records of traces of K characters through the stage's own writer, then times, in
the same process and page cache:

  - `Stage.read_index(RESUME_FIELDS)`: what `generate_prompts` reads;
  - `Stage.read()`: every record parsed (what a resume costs without the index);
  - reading the shard bytes alone (the floor for any scan of the records themselves).

    PYTHONPATH=. .venv/bin/python bench/resume_scan.py [--records 20000] [--chars 40000]

Prints one table and the ratios. Times are wall-clock on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import random
import string
import tempfile
import time
from pathlib import Path


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from distill.generate import RESUME_FIELDS
    from distill.records import RunDir

    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--chars", type=int, default=40000, help="characters of reasoning per trace")
    args = ap.parse_args()
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(5000)]
    with tempfile.TemporaryDirectory() as tmp:
        stage = RunDir(Path(tmp)).stage("generate")
        with stage.writer(index=RESUME_FIELDS) as w:
            for i in range(args.records):
                text = " ".join(rng.choices(words, k=args.chars // 6))[: args.chars]
                w.write({"id": f"{i:016x}", "prompt_id": f"p{i // 4}", "gen_hash": "h",
                         "sample": i % 4, "messages": [{"role": "user", "content": "q" * 200}],
                         "reasoning": text, "content": text[:1000], "finish_reason": "stop",
                         "usage": {"prompt_tokens": 60, "completion_tokens": args.chars // 4},
                         "cost": 0.01, "latency_s": 12.5})
        size = sum(p.stat().st_size for p in stage.shards())
        index = sum(p.with_name(p.name + ".idx").stat().st_size for p in stage.shards())

        def raw():
            for p in stage.shards():
                with open(p, "rb") as f:
                    while f.read(1 << 24):
                        pass

        assert sum(1 for _ in stage.read_index(RESUME_FIELDS)) == args.records
        t_index = _best(lambda: sum(1 for _ in stage.read_index(RESUME_FIELDS)))
        t_full = _best(lambda: sum(1 for _ in stage.read()), repeat=2)
        t_raw = _best(raw)
    print(f"{args.records:,} records, {size / 1e6:,.0f} MB of shards, {index / 1e6:,.1f} MB of index\n")
    print("| scan | seconds | records/s | vs index |")
    print("|---|--:|--:|--:|")
    for name, t in (("read_index (resume)", t_index), ("read (every record parsed)", t_full),
                    ("shard bytes only (cached)", t_raw)):
        print(f"| {name} | {t:.3f} | {args.records / t:,.0f} | {t / t_index:.1f}x |")


if __name__ == "__main__":
    main()
