"""The filter stage at scale: `distill filter` on synthetic run directories of 10k, 100k and 1M
traces (wall time, peak memory, traces/s, how both grow with N), side by side with datatrove's
MinHash dedup pipeline on the same texts, and how far the two agree on the near duplicates.

    python3 -m venv /tmp/bench-datatrove
    /tmp/bench-datatrove/bin/pip install 'datatrove[processing]==0.10.1' orjson
    PYTHONPATH=. .venv/bin/python bench/scale.py --sizes 10000,100000,1000000

`--sides distill` or `--sides datatrove` runs one side only. Data goes to --work-dir (default
/tmp/distill-scale; 1M traces take ~7 GB, datatrove's outputs as much again) and is reused by
the next run with the same size and seed; give each concurrent run its own --work-dir.

distill is driven only through its CLI: the script writes a run directory as the prompts and
generate stages would (prompts/ and generate/part-*.jsonl shards of Trace records with the
recipe's gen_hash, both _SUCCESS markers) and a recipe, then runs `distill filter RECIPE
--run-dir DIR` as a subprocess. Recipe: verification OFF at every size (`filter.verify:
false`: the other filters are measured, the verifier has its own bench), format checks on,
decontamination against gsm8k and math500 (local files in ../shared/data), `dedup: minhash`,
`select: all`. datatrove reads the same shards (text = reasoning + "\\n" + content, as distill
dedups) and runs Signature, Buckets, Cluster, Filter with the local executor, one process,
word 5-grams and the bands x rows datasketch picks for distill's threshold (9 x 12 at 0.8).

Synthetic traces (`make_run`, deterministic from --seed): 4 samples per prompt; text lengths
log-normal (median 4 KB, sigma 0.75, clipped to 0.3-120 KB: the tail reaches 120 KB at 1M),
made of phrases of 4-10 words drawn from a Zipf-Mandelbrot law over a 50k-word vocabulary
(common English and math words first, then made-up words); a bank of 2^19 phrases makes
writing fast while unrelated traces share almost no word 5-gram. Planted: exactly 3% of the
traces are near duplicates (a later sample of a prompt is sample 0 with 1% of its reasoning's
words replaced: expected 5-gram Jaccard ~0.9), and exactly 1% of the prompts are contaminated
(a gsm8k or math500 test question asked with the recipe's template). The ground truth is kept
in truth.json beside the run directory.

Measured per run, on the subprocess: wall time; peak RSS of the process tree (the sum of RSS
over the tree, sampled with psutil every 0.1 s); the max RSS of its largest single process and
the CPU time of the whole tree (os.wait4's rusage). Cores used = CPU time / wall time. Prints a
Markdown table and writes JSON (--out, default bench/results/scale.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLES, DUP_RATE, EDIT_FRACTION, CONTAMINATED = 4, 0.03, 0.01, 0.01
SHARD, VOCAB, PHRASES = 50_000, 50_000, 1 << 19
SOURCE = "synthetic_math"
TEMPLATE = "{prompt}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
COMMON = ("the so we is of a to that and then x this it be let me wait equation number so "
          "now which in for if with value sum by can are answer check right since but n not "
          "from as each two one first term total find at gives means times minus plus equals "
          "therefore because case step should would hmm okay actually side both get").split()
RECIPE = """# The recipe bench/scale.py filters with (written by it): verification off.
run: {{name: scale-bench, seed: 0}}
prompts:
  sources:
    - {{name: {source}, kind: jsonl, path: {prompts}, category: reasoning,
       prompt_field: problem, answer_field: answer, prompt_template: {template}}}
teacher: {{model: deepseek-ai/DeepSeek-R1, base_url: "http://localhost:8000/v1"}}
generate: {{samples_per_prompt: {samples}, temperature: 0.6, top_p: 0.95, max_tokens: 32768}}
filter: {{verify: false, drop_truncated: true, require_think: true, require_answer: true,
         drop_repetition: true, decontaminate: [gsm8k, math500], dedup: minhash, select: all}}
train: {{student: toy:student}}
eval:
  benchmarks: [gsm8k, math500]
  data_files: {{gsm8k: {gsm8k}, math500: {math500}}}
"""

DATATROVE_SCRIPT = r'''
import re, sys, time
from importlib.metadata import version
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                      MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import LambdaFilter
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


def trace(self, data, path, id_in_file):
    return {"id": data["id"], "text": (data.get("reasoning") or "") + "\n" + (data.get("content") or ""),
            "metadata": {}}


def member(self, doc):
    return {"id": doc.id, "cluster": doc.metadata.get("minhash_cluster_id", -1)}


src, work, bands, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows)
read = lambda: JsonlReader(src, glob_pattern="part-*.jsonl", recursive=False, adapter=trace)
side = lambda name: JsonlWriter(f"{work}/{name}", adapter=member, compression=None)
stages = [
    [read(), MinhashDedupSignature(output_folder=f"{work}/sigs", config=config, language=Words())],
    [MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config)],
    [MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids",
                         config=config, save_cluster_id=True)],
    # The kept set in full (as distill writes dataset/), and every cluster member's id beside it.
    [read(), MinhashDedupFilter(input_folder=f"{work}/remove_ids", load_cluster_ids=True,
                                exclusion_writer=side("removed")),
     JsonlWriter(f"{work}/kept", compression=None),
     LambdaFilter(lambda d: d.metadata.get("minhash_cluster_id", -1) != -1), side("clustered")],
]
print("DATATROVE_VERSION", version("datatrove"))
for i, pipeline in enumerate(stages):
    start = time.perf_counter()
    # The buckets stage runs one task per bucket (datatrove requires it), one at a time.
    LocalPipelineExecutor(pipeline=pipeline, tasks=bands if i == 1 else 1, workers=1,
                          logging_dir=f"{work}/logs/{i}").run()
    print("DATATROVE_STAGE", i, time.perf_counter() - start)
'''


def write_recipe(size_dir: Path) -> Path:
    """The bench recipe for one run directory (its prompt source is that run's prompt file)."""
    path = size_dir / "recipe.yaml"
    path.write_text(RECIPE.format(source=SOURCE, prompts=json.dumps(str(size_dir / "prompts.jsonl")),
                                  template=json.dumps(TEMPLATE), samples=SAMPLES,
                                  gsm8k=DATA / "gsm8k" / "test.jsonl",
                                  math500=DATA / "math500" / "test.jsonl"))
    return path


def phrase_bank(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(vocabulary, phrases), both object arrays of str: COMMON words then made-up ones, and
    PHRASES phrases of 4-10 Zipf-drawn words, some ending a clause, a sentence or a paragraph."""
    lengths = rng.integers(2, 12, VOCAB * 2)
    letters = (rng.integers(0, 26, int(lengths.sum())) + 97).astype(np.uint8).tobytes().decode()
    ends = np.cumsum(lengths)
    made_up = dict.fromkeys(letters[e - n:e] for e, n in zip(ends, lengths))
    common = set(COMMON)
    words = list(COMMON) + [w for w in made_up if w not in common][:VOCAB - len(COMMON)]
    vocab = np.array(words, dtype=object)
    p = 1.0 / (np.arange(1, VOCAB + 1) + 2.7) ** 1.07          # Zipf-Mandelbrot
    cdf = np.cumsum(p / p.sum())
    sizes = rng.integers(4, 11, PHRASES)
    ids = np.minimum(np.searchsorted(cdf, rng.random(int(sizes.sum()))), VOCAB - 1)
    ends = np.cumsum(sizes)
    tails = rng.choice(np.array(["", ",", ".", ".\n\n"], dtype=object), PHRASES,
                       p=[0.62, 0.15, 0.20, 0.03])
    # One join, then slices: a join per phrase costs seconds.
    flat = " ".join(vocab[ids])
    at = np.concatenate([[0], np.cumsum(np.array([len(w) + 1 for w in words])[ids])])
    phrases = [flat[a:b] + t for a, b, t in
               zip(at[ends - sizes].tolist(), (at[ends] - 1).tolist(), tails)]
    return vocab, np.array(phrases, dtype=object)


def benchmark_questions() -> list[tuple[str, str]]:
    """(question, gold answer) of the gsm8k and math500 test sets: the contaminated prompts."""
    out = []
    for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append((row["question"], row["answer"].split("####")[-1].strip().replace(",", "")))
    for line in (DATA / "math500" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append((row["problem"], row["answer"]))
    return out


class Shards:
    """Writes a folder's part-NNNNN.jsonl shards (and their .idx of `index` fields) in the
    layout of records.ShardWriter, with orjson and without a flush per record: ShardWriter's
    json.dumps alone caps the writing near 10k traces/s."""

    def __init__(self, folder: Path, per_shard: int, index: tuple[str, ...] = ()):
        import orjson
        self.dumps, self.folder, self.per_shard, self.index = orjson.dumps, folder, per_shard, index
        self.shard, self.count, self.files = 0, 0, None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, rec: dict) -> None:
        if self.files is None or self.count % self.per_shard == 0:
            self.close()
            path = self.folder / f"part-{self.shard:05d}.jsonl"
            self.files = (open(path, "xb"), open(f"{path}.idx", "xb") if self.index else None)
            self.shard, self.end = self.shard + 1, 0
        line = self.dumps(rec) + b"\n"
        self.files[0].write(line)
        self.end += len(line)
        if self.files[1]:
            entry = {"id": rec["id"], **{k: rec[k] for k in self.index}, "end": self.end}
            self.files[1].write(self.dumps(entry) + b"\n")
        self.count += 1

    def close(self) -> None:
        for f in self.files or ():
            if f:
                f.close()


def make_run(size_dir: Path, n: int, seed: int) -> dict:
    """Writes size_dir/run (prompts/, generate/ shards and markers), size_dir/prompts.jsonl
    and the recipe; returns the ground truth: planted near duplicates (dup id -> id of the
    sample it copies) and contaminated prompt ids. Streams: memory does not grow with n."""
    from distill.recipes import read_recipe
    from distill.records import MARKER, RunDir, record_id, write_json

    start = time.perf_counter()
    shutil.rmtree(size_dir, ignore_errors=True)
    size_dir.mkdir(parents=True)
    run = RunDir(size_dir / "run")
    gen_hash = read_recipe(str(write_recipe(size_dir))).generation_hash()
    rng = np.random.default_rng(seed)
    vocab, bank = phrase_bank(rng)
    mean_phrase = float(np.mean([len(s) + 1 for s in bank[:10_000]]))
    bench = benchmark_questions()
    n_prompts = n // SAMPLES
    contaminated = set(rng.choice(n_prompts, round(CONTAMINATED * n_prompts), replace=False).tolist())
    later = rng.choice(n_prompts * (SAMPLES - 1), round(DUP_RATE * n), replace=False)
    dup_slots = set(((later // (SAMPLES - 1)) * SAMPLES + later % (SAMPLES - 1) + 1).tolist())
    rounds = len(contaminated) // len(bench) + 1
    items = iter(enumerate(np.concatenate([rng.permutation(len(bench)) for _ in range(rounds)]).tolist()))
    truth: dict = {"dups": {}, "contaminated": []}
    prompt_out = Shards(run.prompts.path, n_prompts)
    out = Shards(run.generate.path, SHARD, index=("prompt_id", "gen_hash", "cost", "finish_reason"))
    source_file = open(size_dir / "prompts.jsonl", "w")
    block = 4096
    for b0 in range(0, n_prompts, block):
        m = min(block, n_prompts - b0)
        chars = np.clip(rng.lognormal(np.log(4096), 0.75, (m, SAMPLES)), 300, 120_000)
        phrases = np.maximum(2, np.rint(chars / mean_phrase)).astype(np.int64)
        reasoning_n = np.maximum(1, np.rint(phrases * 0.9)).astype(np.int64)
        prompt_n = rng.integers(3, 9, m)
        counts = np.concatenate([prompt_n[:, None], phrases], axis=1).ravel()
        ids = rng.integers(0, PHRASES, int(counts.sum()))
        ends = np.cumsum(counts).reshape(m, SAMPLES + 1)
        answers = rng.integers(1, 10_000, m)
        for j in range(m):
            p = b0 + j
            if p in contaminated:       # each item once, then again with a prefix (new ids)
                i, item = next(items)
                problem, answer = bench[item]
                problem = f"Variant {i // len(bench)}: {problem}" if i >= len(bench) else problem
            else:
                e = ends[j, 0]
                problem, answer = " ".join(bank[ids[e - prompt_n[j]:e]]), str(answers[j])
            messages = [{"role": "user", "content": TEMPLATE.format(prompt=problem)}]
            pid = record_id(SOURCE, messages)
            prompt = {"id": pid, "source": SOURCE, "shape": "bench-scale", "category": "reasoning",
                      "subcategory": None, "messages": messages, "verifier": "math",
                      "answer": answer, "tests": None, "entry_point": None,
                      "source_revision": "bench-scale"}
            prompt_out.write(prompt)
            source_file.write(json.dumps({"problem": problem, "answer": answer}) + "\n")
            if p in contaminated:
                truth["contaminated"].append(pid)
            texts = []
            for k in range(SAMPLES):
                if p * SAMPLES + k in dup_slots:
                    words = texts[0][0].split(" ")
                    for i in rng.choice(len(words), max(1, round(EDIT_FRACTION * len(words))),
                                        replace=False):
                        words[i] = vocab[rng.integers(len(COMMON), VOCAB)]
                    texts.append((" ".join(words), texts[0][1]))
                    continue
                e, r = ends[j, k + 1], reasoning_n[j, k]
                s = e - phrases[j, k]
                texts.append((" ".join(bank[ids[s:s + r]]),
                              " ".join(bank[ids[s + r:e]]) + f" The final answer is $\\boxed{{{answer}}}$."))
            tokens = [(len(r) + len(c)) // 4 for r, c in texts]
            usage = {"prompt_tokens": len(messages[0]["content"]) // 4 + 8,
                     "completion_tokens": sum(tokens), "cached_prompt_tokens": 0,
                     "reasoning_tokens": sum(len(r) // 4 for r, _ in texts), "choices": SAMPLES}
            cost = (usage["prompt_tokens"] * 0.55 + usage["completion_tokens"] * 2.19) / 1e6 / SAMPLES
            for k, (reasoning, content) in enumerate(texts):
                tid = record_id(pid, k, gen_hash)
                if k and p * SAMPLES + k in dup_slots:
                    truth["dups"][tid] = record_id(pid, 0, gen_hash)
                out.write({**prompt, "id": tid, "prompt_id": pid, "sample_index": k,
                           "gen_hash": gen_hash, "reasoning": reasoning, "content": content,
                           "finish_reason": "stop", "usage": usage,
                           "latency_s": round(usage["completion_tokens"] / 120, 4),
                           "attempts": 1, "cost": cost, "teacher": "deepseek-ai/DeepSeek-R1"})
    for f in (out, prompt_out, source_file):
        f.close()
    # The markers as the stages write them (Stage.complete would count the records again).
    write_json(run.prompts.path / MARKER, {"records": n_prompts, "sources": {SOURCE: n_prompts}})
    write_json(run.generate.path / MARKER, {"records": n, "samples": n, "prompts": n_prompts,
                                            "gen_hash": gen_hash, "failures": 0, "truncated": 0,
                                            "teacher": "deepseek-ai/DeepSeek-R1"})
    seconds = time.perf_counter() - start
    truth.update(n=n, seed=seed, dup_rate=DUP_RATE, edit_fraction=EDIT_FRACTION,
                 contaminated_rate=CONTAMINATED, seconds=seconds, records_per_s=n / seconds,
                 bytes=sum(f.stat().st_size for f in run.generate.shards()))
    (size_dir / "truth.json").write_text(json.dumps(truth))
    return truth


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Runs `cmd`, its output to `log`: wall time, exit status, peak RSS of the process tree
    (psutil, sampled every 0.1 s), max RSS of its largest process and CPU time (os.wait4)."""
    import psutil

    peak, done = [0], threading.Event()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        start = time.perf_counter()

        def poll() -> None:
            try:
                root = psutil.Process(proc.pid)
                while not done.is_set():
                    tree = [root, *root.children(recursive=True)]
                    total = 0
                    for p in tree:
                        try:
                            total += p.memory_info().rss
                        except psutil.Error:
                            pass
                    peak[0] = max(peak[0], total)
                    done.wait(0.1)
            except psutil.Error:
                pass
        sampler = threading.Thread(target=poll, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "rc": proc.returncode, "peak_rss_tree": peak[0],
            "max_rss_one_process": usage.ru_maxrss * 1024, "cpu_s": cpu, "cores_used": cpu / wall}


def run_distill(size_dir: Path) -> dict:
    """`distill filter` on the run directory; its decisions read back from filter/ verdicts."""
    from distill.records import Stage

    run = size_dir / "run"
    for folder in ("filter", "dataset"):
        shutil.rmtree(run / folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "distill.cli", "filter", str(size_dir / "recipe.yaml"),
           "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = {"command": " ".join(cmd), **measure(cmd, size_dir / "distill-filter.log", env)}
    if result["rc"]:
        raise RuntimeError(f"distill filter failed: see {size_dir / 'distill-filter.log'}")
    considered, kept, winner, failed = set(), 0, {}, {}
    for v in Stage(run, "filter").read():
        why = v["reasons"].get("dedup", "")
        kept += v["kept"]
        failed[v["failed"]] = failed.get(v["failed"], 0) + 1
        if v["kept"] or why.startswith("near-duplicate trace of "):
            considered.add(v["id"])            # reached the trace near-duplicate step
        if why.startswith("near-duplicate trace of "):
            winner[v["id"]] = why.rsplit(" ", 1)[1]
    clusters: dict[str, list[str]] = {}
    for loser, win in winner.items():
        clusters.setdefault(win, [win]).append(loser)
    return {**result, "kept": kept, "failed": {str(k): c for k, c in failed.items()},
            "removed": len(winner), "_considered": considered, "_clusters": list(clusters.values())}


def run_datatrove(size_dir: Path, python: str, bands: int, rows: int) -> dict:
    """datatrove's four MinHash stages on the generate shards, in its own venv's python."""
    work = size_dir / "datatrove"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    cmd = [python, "-c", DATATROVE_SCRIPT, str(size_dir / "run" / "generate"), str(work),
           str(bands), str(rows)]
    log = size_dir / "datatrove.log"
    result = {"command": f"{python} -c DATATROVE_SCRIPT ...", **measure(cmd, log)}
    text = log.read_text()
    if result["rc"]:
        raise RuntimeError(f"datatrove failed: see {log}\n{text[-2000:]}")
    result["version"] = re.search(r"DATATROVE_VERSION (\S+)", text).group(1)
    result["stages_s"] = [float(s) for s in re.findall(r"DATATROVE_STAGE \d ([\d.]+)", text)]
    members: dict[int, list[str]] = {}
    removed = 0
    for name in ("removed", "clustered"):
        for path in sorted((work / name).glob("*.jsonl")):
            for line in path.open():
                row = json.loads(line)
                members.setdefault(row["cluster"], []).append(row["id"])
                removed += name == "removed"
    return {**result, "removed": removed, "_clusters": list(members.values())}


def pairs(clusters: list[list[str]], among: set[str] | None = None) -> set[tuple[str, str]]:
    """Every unordered pair of ids in one cluster (only ids in `among`, when given)."""
    return {tuple(sorted(pair)) for c in clusters
            for pair in combinations([i for i in c if among is None or i in among], 2)}


def agreement(truth: dict, d: dict | None, t: dict | None) -> dict:
    """Near-duplicate pairs found by each side, by both, by one only; recall of the planted
    pairs and pairs that were not planted. Compared on the ids distill's trace near-duplicate
    step saw (its other filters run first); datatrove's recall also over all traces."""
    origin: dict[str, list[str]] = {}
    for dup, src in truth["dups"].items():
        origin.setdefault(src, [src]).append(dup)
    planted_all = pairs(list(origin.values()))
    among = d["_considered"] if d else None
    planted = pairs(list(origin.values()), among)
    out: dict = {"planted_pairs": len(planted_all), "planted_pairs_considered": len(planted)}
    found = {}
    for name, side in (("distill", d), ("datatrove", t)):
        if side:
            found[name] = pairs(side["_clusters"], among)
            out[name] = {"pairs": len(found[name]), "recall": len(found[name] & planted) / max(1, len(planted)),
                         "not_planted": len(found[name] - planted_all)}
    if t:
        out["datatrove"]["recall_all_traces"] = len(pairs(t["_clusters"]) & planted_all) / max(1, len(planted_all))
    if d and t:
        a, b = found["distill"], found["datatrove"]
        out.update(pairs_both=len(a & b), pairs_distill_only=len(a - b), pairs_datatrove_only=len(b - a),
                   examples_distill_only=sorted(a - b)[:5], examples_datatrove_only=sorted(b - a)[:5])
    return out


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """The slope of log(value) against log(N): 1 is linear, 0 is flat."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0]) if len(sizes) > 1 else None


def machine(dt_python: str | None) -> dict:
    import datasketch

    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": cpu.group(1) if cpu else platform.processor(),
            "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
            "python": platform.python_version(), "distill_commit": commit,
            "datasketch": datasketch.__version__, "numpy": np.__version__,
            "datatrove_python": dt_python}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--sides", default="distill,datatrove")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/distill-scale"))
    ap.add_argument("--datatrove-python", default="/tmp/bench-datatrove/bin/python")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sides = args.sides.split(",")
    if any(n % SAMPLES for n in sizes):
        sys.exit(f"sizes must be multiples of {SAMPLES} (samples per prompt)")
    from datasketch import MinHashLSH
    lsh = MinHashLSH(threshold=0.8, num_perm=112)    # distill's filter.dedup_threshold, 112 perms
    bands, rows = lsh.b, lsh.r
    results = {"machine": machine(args.datatrove_python if "datatrove" in sides else None),
               "bands_x_rows": [bands, rows], "sizes": {}}
    for n in sizes:
        size_dir = args.work_dir / f"n{n}-s{args.seed}"
        truth_file = size_dir / "truth.json"
        truth = json.loads(truth_file.read_text()) if truth_file.exists() else None
        if not truth or (truth["dup_rate"], truth["edit_fraction"]) != (DUP_RATE, EDIT_FRACTION):
            print(f"writing {n} synthetic traces to {size_dir} ...", file=sys.stderr)
            truth = make_run(size_dir, n, args.seed)
        entry: dict = {"generate": {k: truth[k] for k in ("seconds", "records_per_s", "bytes")},
                       "planted_dups": len(truth["dups"]),
                       "contaminated_prompts": len(truth["contaminated"])}
        d = t = None
        if "distill" in sides:
            print(f"distill filter at {n} ...", file=sys.stderr)
            d = entry["distill"] = run_distill(size_dir)
        if "datatrove" in sides:
            print(f"datatrove at {n} ...", file=sys.stderr)
            t = entry["datatrove"] = run_datatrove(size_dir, args.datatrove_python, bands, rows)
        entry["agreement"] = agreement(truth, d, t)
        for side in (d, t):
            if side:
                side["traces_per_s"] = n / side["wall_s"]
                side["traces_per_s_per_core"] = n / side["cpu_s"]
                for key in [k for k in side if k.startswith("_")]:
                    del side[key]
        results["sizes"][n] = entry
    report(results, sides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nJSON: {args.out}")


def report(results: dict, sides: list[str]) -> None:
    """The Markdown tables, the growth exponents and the goals, to stdout (and into results)."""
    m, by_size = results["machine"], results["sizes"]
    print(f"# filter stage at scale ({m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB; "
          f"distill {m['distill_commit']}; MinHash 5-grams, {results['bands_x_rows'][0]} x "
          f"{results['bands_x_rows'][1]}; verification off)\n")
    print("| side | traces | wall s | peak RSS tree MiB | max RSS 1 proc MiB | CPU s | cores used "
          "| traces/s | traces/s/core | kept | near-dup removed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side in sides:
        for n, e in by_size.items():
            r = e[side]
            kept = r.get("kept", n - r["removed"])
            print(f"| {side} | {n:,} | {r['wall_s']:.1f} | {r['peak_rss_tree'] / 2**20:,.0f} | "
                  f"{r['max_rss_one_process'] / 2**20:,.0f} | {r['cpu_s']:.1f} | {r['cores_used']:.2f} | "
                  f"{r['traces_per_s']:,.0f} | {r['traces_per_s_per_core']:,.0f} | {kept:,} | {r['removed']:,} |")
    print()
    sizes = list(by_size)
    for side in sides:
        fit = {"wall_exponent": exponent(sizes, [by_size[n][side]["wall_s"] for n in sizes]),
               "peak_rss_exponent": exponent(sizes, [by_size[n][side]["peak_rss_tree"] for n in sizes])}
        if len(sizes) > 1:
            small, big = by_size[min(sizes)][side], by_size[max(sizes)][side]
            fit["peak_rss_ratio"] = big["peak_rss_tree"] / small["peak_rss_tree"]
            print(f"{side}: wall ~ N^{fit['wall_exponent']:.2f}, peak RSS ~ "
                  f"N^{fit['peak_rss_exponent']:.2f}; peak RSS {max(sizes):,}/{min(sizes):,} = "
                  f"{fit['peak_rss_ratio']:.2f} (goal <= 1.5 for 1M/10k)")
        worst = min(by_size[n][side]["traces_per_s_per_core"] for n in sizes)
        fit["min_traces_per_s_per_core"] = worst
        print(f"{side}: lowest throughput {worst:,.0f} traces/s per core: "
              f"{'meets' if worst >= 5000 else 'misses'} the 5,000 goal")
        results[f"fit_{side}"] = fit
    print("\n| traces | generated rec/s | planted pairs (considered) | distill recall | datatrove "
          "recall | both | distill only | datatrove only | not planted (d / dt) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, e in by_size.items():
        a, g = e["agreement"], e["generate"]
        rec = {s: f"{a[s]['recall']:.3f}" if s in a else "-" for s in ("distill", "datatrove")}
        print(f"| {n:,} | {g['records_per_s']:,.0f} | {a['planted_pairs']:,} "
              f"({a['planted_pairs_considered']:,}) | {rec['distill']} | {rec['datatrove']} | "
              f"{a.get('pairs_both', '-')} | {a.get('pairs_distill_only', '-')} | "
              f"{a.get('pairs_datatrove_only', '-')} | {a.get('distill', {}).get('not_planted', '-')} / "
              f"{a.get('datatrove', {}).get('not_planted', '-')} |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
