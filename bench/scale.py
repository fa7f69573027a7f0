"""The filter stage at scale: `distill filter` on synthetic run directories of 10k, 100k and 1M
traces (wall time, peak memory, traces/s and how they grow with N), side by side with
datatrove's MinHash dedup pipeline on the same texts, and how the two agree on near duplicates.

    python3 -m venv /tmp/bench-datatrove
    /tmp/bench-datatrove/bin/pip install 'datatrove[processing]==0.10.1' orjson
    PYTHONPATH=. .venv/bin/python bench/scale.py --sizes 10000,100000,1000000

`--sides distill` or `--sides datatrove` runs one side. Data goes to --work-dir (1M traces: ~6.5
GB, datatrove's outputs as much again) and is reused by a later run of the same size and seed;
give concurrent runs their own --work-dir.

distill is driven through its CLI only: the script writes a run directory as the prompts and
generate stages would (prompts/, generate/part-*.jsonl shards of Trace records stamped with the
recipe's gen_hash, both _SUCCESS markers) and a recipe, then runs `distill filter RECIPE
--run-dir DIR` in a subprocess. The recipe: verification OFF at every size (`filter.verify:
false`; the verifier has its own bench), format checks on, decontamination against gsm8k and
math500 (../shared/data), `dedup: minhash`, `select: all`. datatrove reads the same shards
(text = reasoning + "\n" + content, what distill dedups) and runs Signature, Buckets, Cluster
and Filter on the local executor in one process, word 5-grams, with the bands x rows datasketch
picks for distill's threshold 0.8 and 112 permutations (9 x 12; datatrove has no Jaccard check).

Synthetic traces (`make_run`, deterministic from --seed, >10k records/s): 4 samples per prompt;
lengths log-normal (median 4 KB, sigma 0.75, clipped to 0.3-120 KB); text from a bank of 2^19
phrases of 4-10 words drawn Zipf-Mandelbrot from 50k words (common English and math words
first, then made-up ones), so unrelated traces share almost no word 5-gram. Planted: exactly 3%
of the traces are near duplicates (a later sample of a prompt is sample 0 with 1% of its
reasoning's words replaced: 5-gram Jaccard ~0.9) and exactly 1% of the prompts are
contaminated (a gsm8k or math500 test question in the recipe's template); truth.json keeps them.

Measured on each subprocess: wall time; peak RSS of the process tree (the sum over the tree,
sampled with psutil every 0.1 s); max RSS of its largest process and CPU time of the tree
(getrusage(RUSAGE_CHILDREN) in a fresh wrapper process). Cores used = CPU s / wall s;
traces/s per core = traces / CPU s. Prints Markdown tables and writes JSON (--out, default
bench/results/scale.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLES, DUP_RATE, EDIT_FRACTION, CONTAMINATED = 4, 0.03, 0.01, 0.01
SHARD, VOCAB, PHRASES = 50_000, 50_000, 1 << 19
SOURCE, TEACHER = "synthetic_math", "deepseek-ai/DeepSeek-R1"
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
teacher: {{model: {teacher}, base_url: "http://localhost:8000/v1"}}
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
    word_tokenize = staticmethod(lambda text: re.findall(r"\w+", text.lower()))
    sent_tokenize = staticmethod(lambda text: [text])
    span_tokenize = staticmethod(lambda text: [(0, len(text))])


def trace(self, data, path, id_in_file):
    text = (data.get("reasoning") or "") + "\n" + (data.get("content") or "")
    return {"id": data["id"], "text": text, "metadata": {}}


def member(self, doc):
    return {"id": doc.id, "cluster": doc.metadata.get("minhash_cluster_id", -1)}


src, work, bands, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows)
read = lambda: JsonlReader(src, glob_pattern="part-*.jsonl", recursive=False, adapter=trace)
side = lambda name: JsonlWriter(f"{work}/{name}", adapter=member, compression=None)
stages = [
    [read(), MinhashDedupSignature(output_folder=f"{work}/sigs", config=config, language=Words())],
    [MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets",
                         config=config)],
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
    prompts = json.dumps(str(size_dir / "prompts.jsonl"))
    path.write_text(RECIPE.format(source=SOURCE, prompts=prompts, template=json.dumps(TEMPLATE),
                                  samples=SAMPLES, teacher=TEACHER,
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
    gsm8k = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").open()]
    math500 = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").open()]
    return [(r["question"], r["answer"].split("####")[-1].strip().replace(",", ""))
            for r in gsm8k] + [(r["problem"], r["answer"]) for r in math500]


class Shards:
    """Writes a folder's part-NNNNN.jsonl shards (and their .idx of `index` fields) in the
    layout of records.ShardWriter, with orjson and no flush per record: ShardWriter's
    json.dumps alone caps the writing near 10k traces/s."""

    def __init__(self, folder: Path, per_shard: int, index: tuple[str, ...] = ()):
        import orjson
        self.dumps, self.folder, self.per_shard, self.index = orjson.dumps, folder, per_shard, index
        self.count, self.files, self.end = 0, [], 0
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, rec: dict) -> None:
        if self.count % self.per_shard == 0:
            self.close()
            path = self.folder / f"part-{self.count // self.per_shard:05d}.jsonl"
            self.files = [open(path, "xb")] + ([open(f"{path}.idx", "xb")] if self.index else [])
            self.end = 0
        line = self.dumps(rec) + b"\n"
        self.files[0].write(line)
        self.end += len(line)
        if self.index:
            entry = {"id": rec["id"], **{k: rec[k] for k in self.index}, "end": self.end}
            self.files[1].write(self.dumps(entry) + b"\n")
        self.count += 1

    def close(self) -> None:
        for f in self.files:
            f.close()


def sample_texts(draw: dict, j: int, answer: str, dups: list[bool], vocab, rng) -> list:
    """(reasoning, content) of the samples of prompt j of a block: the block's drawn phrases,
    or, for a planted near duplicate, sample 0 with EDIT_FRACTION of its reasoning's words
    replaced by made-up words."""
    texts: list[tuple[str, str]] = []
    for k, dup in enumerate(dups):
        if dup:
            words = texts[0][0].split(" ")
            edits = max(1, round(EDIT_FRACTION * len(words)))
            for w in rng.choice(len(words), edits, replace=False):
                words[w] = vocab[rng.integers(len(COMMON), VOCAB)]
            texts.append((" ".join(words), texts[0][1]))
            continue
        text, end, r = draw["text"], draw["ends"][j][k + 1], draw["reasoning"][j][k]
        start = end - draw["phrases"][j][k]
        texts.append((" ".join(text[start:start + r]), " ".join(text[start + r:end])
                      + f" The final answer is $\\boxed{{{answer}}}$."))
    return texts


def make_run(size_dir: Path, n: int, seed: int) -> dict:
    """Writes size_dir/run (prompts/ and generate/ shards, markers), the prompt source file and
    the recipe; returns the ground truth: planted near duplicates (id -> id of the sample it
    copies) and contaminated prompt ids. Streams: its memory does not grow with n."""
    from distill.recipes import read_recipe
    from distill.records import MARKER, RunDir, record_id, write_json

    start, cpu = time.perf_counter(), time.process_time()
    shutil.rmtree(size_dir, ignore_errors=True)
    size_dir.mkdir(parents=True)
    run = RunDir(size_dir / "run")
    gen_hash = read_recipe(str(write_recipe(size_dir))).generation_hash()
    rng = np.random.default_rng(seed)
    vocab, bank = phrase_bank(rng)
    mean_phrase = float(np.mean([len(s) + 1 for s in bank[:10_000]]))
    bench = benchmark_questions()
    n_prompts = n // SAMPLES
    contaminated = set(rng.choice(n_prompts, round(CONTAMINATED * n_prompts), replace=False)
                       .tolist())
    later = rng.choice(n_prompts * (SAMPLES - 1), round(DUP_RATE * n), replace=False)
    dup_slots = set(((later // (SAMPLES - 1)) * SAMPLES + later % (SAMPLES - 1) + 1).tolist())
    # Each benchmark item once (in random order), then again behind "Variant k:" (new ids).
    rounds = len(contaminated) // len(bench) + 1
    items = iter(enumerate(np.concatenate([rng.permutation(len(bench)) for _ in range(rounds)])
                           .tolist()))
    truth: dict = {"dups": {}, "contaminated": []}
    prompts_out = Shards(run.prompts.path, n_prompts)
    source_file = open(size_dir / "prompts.jsonl", "w")
    # The index fields the generate stage keeps beside its shards (RESUME_FIELDS).
    traces_out = Shards(run.generate.path, SHARD,
                        ("prompt_id", "gen_hash", "cost", "finish_reason"))
    for b0 in range(0, n_prompts, 4096):       # random draws a block of prompts at a time
        m = min(4096, n_prompts - b0)
        chars = np.clip(rng.lognormal(np.log(4096), 0.75, (m, SAMPLES)), 300, 120_000)
        phrases = np.maximum(2, np.rint(chars / mean_phrase)).astype(np.int64)
        prompt_n = rng.integers(3, 9, m)
        counts = np.concatenate([prompt_n[:, None], phrases], axis=1).ravel()
        # Python lists: indexing numpy arrays one element at a time is slow.
        draw = {"text": bank[rng.integers(0, PHRASES, int(counts.sum()))].tolist(),
                "phrases": phrases.tolist(), "ends": np.cumsum(counts).reshape(m, -1).tolist(),
                "reasoning": np.maximum(1, np.rint(phrases * 0.9)).astype(np.int64).tolist()}
        answers = rng.integers(1, 10_000, m)
        for j, p in enumerate(range(b0, b0 + m)):
            if p in contaminated:
                i, item = next(items)
                problem, answer = bench[item]
                problem = f"Variant {i // len(bench)}: {problem}" if i >= len(bench) else problem
            else:
                end = draw["ends"][j][0]
                problem = " ".join(draw["text"][end - prompt_n[j]:end])
                answer = str(answers[j])
            messages = [{"role": "user", "content": TEMPLATE.format(prompt=problem)}]
            pid = record_id(SOURCE, messages)
            prompt = {"id": pid, "source": SOURCE, "shape": "bench-scale", "category": "reasoning",
                      "subcategory": None, "messages": messages, "verifier": "math",
                      "answer": answer, "tests": None, "entry_point": None,
                      "source_revision": "bench-scale"}
            prompts_out.write(prompt)
            source_file.write(json.dumps({"problem": problem, "answer": answer}) + "\n")
            if p in contaminated:
                truth["contaminated"].append(pid)
            dups = [p * SAMPLES + k in dup_slots for k in range(SAMPLES)]
            texts = sample_texts(draw, j, answer, dups, vocab, rng)
            usage = {"prompt_tokens": len(messages[0]["content"]) // 4 + 8,
                     "completion_tokens": sum((len(r) + len(c)) // 4 for r, c in texts),
                     "reasoning_tokens": sum(len(r) // 4 for r, _ in texts),
                     "cached_prompt_tokens": 0, "choices": SAMPLES}
            # DeepSeek API list prices (the R1 recipes'); each sample pays its share.
            cost = (usage["prompt_tokens"] * 0.55
                    + usage["completion_tokens"] * 2.19) / 1e6 / SAMPLES
            for k, (reasoning, content) in enumerate(texts):
                tid = record_id(pid, k, gen_hash)
                if dups[k]:
                    truth["dups"][tid] = record_id(pid, 0, gen_hash)
                traces_out.write({**prompt, "id": tid, "prompt_id": pid, "sample_index": k,
                                  "gen_hash": gen_hash, "reasoning": reasoning, "content": content,
                                  "finish_reason": "stop", "usage": usage,
                                  "latency_s": round(usage["completion_tokens"] / 120, 4),
                                  "attempts": 1, "cost": cost, "teacher": TEACHER})
    for f in (traces_out, prompts_out, source_file):
        f.close()
    # The markers as the stages write them (Stage.complete would count the records again).
    write_json(run.prompts.path / MARKER, {"records": n_prompts, "sources": {SOURCE: n_prompts}})
    write_json(run.generate.path / MARKER, {"records": n, "samples": n, "prompts": n_prompts,
                                            "gen_hash": gen_hash, "teacher": TEACHER,
                                            "failures": 0, "truncated": 0})
    seconds = time.perf_counter() - start
    return {**truth, "n": n, "seed": seed, "seconds": seconds, "records_per_s": n / seconds,
            "records_per_cpu_s": n / (time.process_time() - cpu),
            "bytes": sum(f.stat().st_size for f in run.generate.shards())}


# A fresh small process starts each measured command and reports its children's rusage: a
# child's ru_maxrss starts at the high-water RSS of the process that forked it (Linux carries
# it across exec), so measured from this script it would include this script's own peak.
WRAPPER = ("import json, resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
           "ru = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "usage = [rc, ru.ru_maxrss, ru.ru_utime + ru.ru_stime]; "
           "open(sys.argv[1], 'w').write(json.dumps(usage))")


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Runs `cmd`, output to `log`: wall time, exit status, peak RSS of the process tree (psutil,
    sampled every 0.1 s), max RSS of its largest process and CPU time of the tree (the rusage
    of a wrapper's children), and the machine's 1-minute load average before and after."""
    import psutil

    peak, done, load = [0], threading.Event(), os.getloadavg()[0]

    def poll(pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            wrapper = psutil.Process(pid)
            while not done.wait(0.1):
                rss = 0
                for proc in wrapper.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += proc.memory_info().rss
                peak[0] = max(peak[0], rss)

    usage = log.with_suffix(".rusage.json")
    with open(log, "w") as f:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(usage), *cmd], stdout=f,
                                stderr=subprocess.STDOUT, env=env)
        sampler = threading.Thread(target=poll, args=(proc.pid,), daemon=True)
        sampler.start()
        proc.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    rc, maxrss_kib, cpu = json.loads(usage.read_text())
    return {"wall_s": wall, "rc": rc, "peak_rss_tree": peak[0], "max_rss_one_process":
            maxrss_kib * 1024, "cpu_s": cpu, "cores_used": cpu / wall,
            "load_1min": [load, os.getloadavg()[0]]}


def run_distill(size_dir: Path) -> dict:
    """`distill filter` on the run directory; its decisions read back from the filter/ verdicts:
    the ids that reached the trace near-duplicate step (kept, or dropped there: the other
    filters run first) and the clusters (each dropped id names the id kept in its place)."""
    from distill.records import Stage

    run, log = size_dir / "run", size_dir / "distill-filter.log"
    for folder in ("filter", "dataset"):
        shutil.rmtree(run / folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "distill.cli", "filter", str(size_dir / "recipe.yaml"),
           "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = {"command": " ".join(cmd), **measure(cmd, log, env)}
    if result["rc"]:
        raise RuntimeError(f"distill filter failed: see {log}")
    considered, kept, winner, failed = set(), 0, {}, Counter()
    for v in Stage(run, "filter").read():
        why = v["reasons"].get("dedup", "")
        kept += v["kept"]
        failed[str(v["failed"])] += 1
        if why.startswith("near-duplicate trace of "):
            winner[v["id"]] = why.rsplit(" ", 1)[1]
        if v["kept"] or v["id"] in winner:
            considered.add(v["id"])
    clusters: dict[str, list[str]] = {}
    for loser, win in winner.items():
        clusters.setdefault(win, [win]).append(loser)
    return {**result, "kept": kept, "failed": dict(failed), "removed": len(winner),
            "_considered": considered, "_clusters": list(clusters.values()),
            "_removed": set(winner)}


def run_datatrove(size_dir: Path, python: str, bands: int, rows: int) -> dict:
    """datatrove's four MinHash stages on the generate shards, in its own venv's python."""
    work, log = size_dir / "datatrove", size_dir / "datatrove.log"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    cmd = [python, "-c", DATATROVE_SCRIPT, str(size_dir / "run" / "generate"), str(work),
           str(bands), str(rows)]
    result = {"command": f"{python} -c DATATROVE_SCRIPT {' '.join(cmd[3:])}", **measure(cmd, log)}
    text = log.read_text()
    if result["rc"]:
        raise RuntimeError(f"datatrove failed: see {log}\n{text[-2000:]}")
    result["version"] = re.search(r"DATATROVE_VERSION (\S+)", text).group(1)
    result["stages_s"] = [float(s) for s in re.findall(r"DATATROVE_STAGE \d ([\d.]+)", text)]
    members: dict[int, list[str]] = {}
    removed = set()
    for name in ("removed", "clustered"):
        for path in sorted((work / name).glob("*.jsonl")):
            for row in map(json.loads, path.open()):
                members.setdefault(row["cluster"], []).append(row["id"])
                if name == "removed":
                    removed.add(row["id"])
    return {**result, "removed": len(removed), "_clusters": list(members.values()),
            "_removed": removed}


def pairs(clusters: list[list[str]], among: set[str] | None = None) -> set[tuple[str, ...]]:
    """Every unordered pair of ids in one cluster (only ids in `among`, when given)."""
    return {tuple(sorted(pair)) for c in clusters
            for pair in combinations([i for i in c if among is None or i in among], 2)}


def agreement(truth: dict, d: dict | None, t: dict | None) -> dict:
    """Near-duplicate pairs (two ids in one cluster) each side found, both found, one only;
    recall of the planted pairs and pairs found that were not planted; removed ids of each.
    Compared on the ids distill's trace near-duplicate step saw (datatrove dedups all traces:
    its recall over all of them is given too)."""
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
            out[name] = {"pairs": len(found[name]), "not_planted": len(found[name] - planted_all),
                         "recall": len(found[name] & planted) / max(1, len(planted))}
    if t:
        out["datatrove"]["recall_all_traces"] = \
            len(pairs(t["_clusters"]) & planted_all) / max(1, len(planted_all))
    if d and t:
        a, b = found["distill"], found["datatrove"]
        dr, tr = d["_removed"], t["_removed"] & d["_considered"]
        out.update(pairs_both=len(a & b), pairs_distill_only=len(a - b),
                   pairs_datatrove_only=len(b - a), examples_distill_only=sorted(a - b)[:5],
                   examples_datatrove_only=sorted(b - a)[:5], removed_both=len(dr & tr),
                   removed_distill_only=len(dr - tr), removed_datatrove_only=len(tr - dr))
    return out


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """The slope of log(value) against log(N): 1 is linear, 0 is flat."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0]) if len(sizes) > 1 else None


def machine() -> dict:
    import datasketch

    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": cpu.group(1) if cpu else platform.processor(),
            "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
            "python": platform.python_version(), "distill_commit": commit,
            "datasketch": datasketch.__version__, "numpy": np.__version__}


def report(results: dict, sides: list[str]) -> None:
    """Markdown tables, growth exponents and the goals to stdout; the fits into `results`."""
    m, by_size = results["machine"], results["sizes"]
    sizes = list(by_size)
    print(f"# filter stage at scale ({m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB; "
          f"distill {m['distill_commit']}; verification off; MinHash 5-grams, "
          f"{' x '.join(map(str, results['bands_x_rows']))})\n")
    print("| side | traces | wall s | peak RSS tree MiB | max RSS 1 proc MiB | CPU s | cores used "
          "| traces/s | traces/s/core | kept | near-dup removed | load before/after |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for side in sides:
        for n in sizes:
            r = by_size[n][side]
            print(f"| {side} | {n:,} | {r['wall_s']:.1f} | {r['peak_rss_tree'] / 2**20:,.0f} | "
                  f"{r['max_rss_one_process'] / 2**20:,.0f} | {r['cpu_s']:.1f} | "
                  f"{r['cores_used']:.2f} | {r['traces_per_s']:,.0f} | "
                  f"{r['traces_per_s_per_core']:,.0f} | {r.get('kept', n - r['removed']):,} | "
                  f"{r['removed']:,} | {r['load_1min'][0]:.1f} / {r['load_1min'][1]:.1f} |")
    print()
    for side in sides:
        runs = [by_size[n][side] for n in sizes]
        fit = results[f"fit_{side}"] = {f"{k}_exponent": exponent(sizes, [r[k] for r in runs])
                                        for k in ("wall_s", "cpu_s", "peak_rss_tree")}
        fit["peak_rss_ratio"] = runs[-1]["peak_rss_tree"] / runs[0]["peak_rss_tree"]
        fit["min_traces_per_s_per_core"] = worst = min(r["traces_per_s_per_core"] for r in runs)
        if len(sizes) > 1:
            print(f"- {side}: wall ~ N^{fit['wall_s_exponent']:.2f}, "
                  f"CPU ~ N^{fit['cpu_s_exponent']:.2f}, "
                  f"peak RSS ~ N^{fit['peak_rss_tree_exponent']:.2f}; peak RSS {sizes[-1]:,} / "
                  f"{sizes[0]:,} = {fit['peak_rss_ratio']:.2f} (goal at 1M / 10k: <= 1.5)")
        print(f"- {side}: lowest throughput {worst:,.0f} traces/s per core "
              f"({'meets' if worst >= 5000 else 'misses'} the goal of >= 5,000)")
    print("\n| traces | written rec/s (per CPU s) | planted pairs (seen by distill) | recall "
          "distill | recall datatrove | pairs both | distill only | datatrove only "
          "| not planted d / dt |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in sizes:
        a = by_size[n]["agreement"]
        cells = [f"{a[s]['recall']:.3f}" if s in a else "-" for s in ("distill", "datatrove")]
        cells += [str(a.get(f"pairs_{k}", "-")) for k in ("both", "distill_only", "datatrove_only")]
        cells.append(" / ".join(str(a.get(s, {}).get("not_planted", "-"))
                                for s in ("distill", "datatrove")))
        g = by_size[n]["generate"]
        per_cpu = f" ({g['records_per_cpu_s']:,.0f})" if g["records_per_cpu_s"] else ""
        print(f"| {n:,} | {g['records_per_s']:,.0f}{per_cpu} | "
              f"{a['planted_pairs']:,} ({a['planted_pairs_considered']:,}) | "
              + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--sides", default="distill,datatrove")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/distill-scale"))
    ap.add_argument("--datatrove-python", default="/tmp/bench-datatrove/bin/python")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = ap.parse_args()
    sizes, sides = sorted(int(s) for s in args.sizes.split(",")), args.sides.split(",")
    if any(n % SAMPLES for n in sizes):
        sys.exit(f"sizes must be multiples of {SAMPLES} (samples per prompt)")
    from datasketch import MinHashLSH
    lsh = MinHashLSH(threshold=0.8, num_perm=112)    # distill's filter.dedup_threshold, 112 perms
    synthetic = {"samples_per_prompt": SAMPLES, "dup_rate": DUP_RATE,
                 "edit_fraction": EDIT_FRACTION, "contaminated": CONTAMINATED}
    results: dict = {"machine": machine(), "bands_x_rows": [lsh.b, lsh.r],
                     "synthetic": synthetic, "sizes": {}}
    for n in sizes:
        size_dir = args.work_dir / f"n{n}-s{args.seed}"
        truth_file = size_dir / "truth.json"
        truth = json.loads(truth_file.read_text()) if truth_file.exists() else {}
        if truth.get("synthetic") != synthetic:
            print(f"writing {n:,} synthetic traces to {size_dir}", file=sys.stderr)
            truth = {**make_run(size_dir, n, args.seed), "synthetic": synthetic}
            truth_file.write_text(json.dumps(truth))
        entry = results["sizes"][n] = {
            "generate": {k: truth.get(k) for k in ("seconds", "records_per_s",
                                                    "records_per_cpu_s", "bytes")},
            "planted_dups": len(truth["dups"]), "contaminated_prompts": len(truth["contaminated"])}
        d = t = None
        if "distill" in sides:
            print(f"distill filter at {n:,}", file=sys.stderr)
            d = entry["distill"] = run_distill(size_dir)
        if "datatrove" in sides:
            print(f"datatrove at {n:,}", file=sys.stderr)
            t = entry["datatrove"] = run_datatrove(size_dir, args.datatrove_python, lsh.b, lsh.r)
        entry["agreement"] = agreement(truth, d, t)
        for side in filter(None, (d, t)):
            side.update(traces_per_s=n / side["wall_s"], traces_per_s_per_core=n / side["cpu_s"])
            for key in [k for k in side if k.startswith("_")]:
                del side[key]
    report(results, sides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
