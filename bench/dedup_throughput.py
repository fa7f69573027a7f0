"""MinHash near-duplicate throughput on synthetic traces: distill's dedup
(`distill.filters.dedup.near_duplicates`: datasketch signatures, LSH) versus datatrove's
MinHash pipeline (signature, buckets, cluster, filter stages on local files), with the same
parameters: word 5-grams, 14 buckets x 8 hashes, one process each. Side by side in one run.

    python -m venv /work/bench-envs/datatrove
    /work/bench-envs/datatrove/bin/pip install datatrove==0.10.1 "xxhash<4" nltk tokenizers orjson
    PYTHONPATH=. .venv/bin/python bench/dedup_throughput.py --n 100000

The traces: ~250 words each from a 5,000-word vocabulary, 10% of them copies of another trace
with 3 words changed (near duplicates), 2% exact copies. Prints seconds, traces per second,
traces removed and the ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DATATROVE_SCRIPT = r'''
import re, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                      MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.word_tokenizers import WordTokenizer


class Words(WordTokenizer):
    """\w+ words, as distill splits them (datatrove's English tokenizer needs NLTK data)."""
    def word_tokenize(self, text):
        return re.findall(r"\w+", text.lower())
    def sent_tokenize(self, text):
        return [text]
    def span_tokenize(self, text):
        return [(0, len(text))]


src, work = sys.argv[1], sys.argv[2]
config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
words = Words()
stages = [
    [JsonlReader(src), MinhashDedupSignature(output_folder=f"{work}/sigs", config=config,
                                             language=words)],
    [MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets",
                         config=config)],
    [MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids",
                         config=config)],
    [JsonlReader(src), MinhashDedupFilter(input_folder=f"{work}/remove_ids"),
     JsonlWriter(f"{work}/out")],
]
start = time.perf_counter()
for i, pipeline in enumerate(stages):
    # The buckets stage runs one task per bucket (datatrove requires it), one at a time.
    LocalPipelineExecutor(pipeline=pipeline, tasks=config.num_buckets if i == 1 else 1,
                          workers=1, logging_dir=f"{work}/logs/{i}").run()
print("DATATROVE_SECONDS", time.perf_counter() - start)
'''


def make_traces(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # Letters only: datatrove's text normalisation drops digits.
    vocab = sorted({"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                    for _ in range(6000)})[:5000]
    texts: list[str] = []
    for i in range(n):
        r = rng.random()
        if texts and r < 0.10:
            words = rng.choice(texts).split()
            for _ in range(3):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            texts.append(" ".join(words))
        elif texts and r < 0.12:
            texts.append(rng.choice(texts))
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(150, 350))))
    return texts


def run_distill(texts: list[str]) -> tuple[float, int]:
    from distill.filters.dedup import near_duplicates
    start = time.perf_counter()
    dropped = near_duplicates({f"{i:07d}": t for i, t in enumerate(texts)}, threshold=0.72,
                              params=(14, 8))
    return time.perf_counter() - start, len(dropped)


def run_datatrove(python: str, texts: list[str], tmp: Path) -> tuple[float, int]:
    src = tmp / "src"
    src.mkdir()
    with open(src / "traces.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": t}) + "\n")
    out = subprocess.run([python, "-c", DATATROVE_SCRIPT, str(src), str(tmp / "work")],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    seconds = float(re.search(r"DATATROVE_SECONDS ([\d.]+)", out.stdout).group(1))
    kept = sum(1 for p in (tmp / "work" / "out").glob("*.jsonl*")
               for _ in __import__("gzip").open(p, "rt"))
    return seconds, len(texts) - kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--datatrove-python", default="/work/bench-envs/datatrove/bin/python")
    args = ap.parse_args()
    texts = make_traces(args.n)
    print(f"{args.n} synthetic traces, word 5-grams, 14 buckets x 8 hashes, one process each")
    print(f"{'run':>3} | {'side':<9} | {'seconds':>8} | {'traces/s':>9} | removed")
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t_dt, removed_dt = run_datatrove(args.datatrove_python, texts, Path(tmp))
        t_d, removed_d = run_distill(texts)
        print(f"{r:>3} | {'datatrove':<9} | {t_dt:>8.1f} | {args.n / t_dt:>9.0f} | {removed_dt}")
        print(f"{r:>3} | {'distill':<9} | {t_d:>8.1f} | {args.n / t_d:>9.0f} | {removed_d}")
        print(f"{r:>3} | ratio     | distill / datatrove time: {t_d / t_dt:.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
