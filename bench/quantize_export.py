"""The quantize stage on a real architecture: a Qwen2.5-Math-1.5B (the r1-to-1.5b recipe's
student) at full size, random weights in bf16, with its real tokenizer and chat template
(../shared/data/tokenizers/). Times llama.cpp's converter and quantizer per type, runs the export
checks on each file, and measures file size, memory and single-stream CPU decode tokens/s beside
the unquantized checkpoint served by transformers, and beside the bandwidth limit: a decoded
token reads every weight once, so tokens/s x file size is the memory bandwidth the decode used.

    python bench/quantize_export.py                   # 1.5B: about 6 minutes on 2 cores, 8 GB RAM
    python bench/quantize_export.py --model Qwen/Qwen2.5-Math-7B --tokenizer Qwen2.5-Math-7B

Needs what setup.sh installs (llama-cpp-python built from source, the converter in
.venv/llama.cpp). Random weights do not stop by themselves, so the probe's stop is measured,
not required; the template, tokenization and end-of-turn checks are the real ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

TOKENIZERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizers"


def build(model: str, tokenizer: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from distill.plan.params import load_config
    config, _ = load_config(model, None)
    cfg = AutoConfig.for_model(config["model_type"], **{
        k: v for k, v in config.items() if k not in ("model_type", "architectures",
                                                    "transformers_version", "_name_or_path")})
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    net.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="Qwen/Qwen2.5-Math-1.5B")
    p.add_argument("--tokenizer", default="Qwen2.5-Math-1.5B")
    p.add_argument("--types", default="q8_0,q4_k_m")
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()

    from distill import logs
    from distill.quantize import checks, gguf
    from distill.quantize.measure import measure_gguf
    from distill.quantize.torchao import measure
    logs.setup()
    work = Path(tempfile.mkdtemp(prefix="distill-quantize-bench-"))
    try:
        t = time.monotonic()
        model_dir = build(args.model, TOKENIZERS / args.tokenizer, work / "model")
        built_s = time.monotonic() - t
        probe = [{"role": "user", "content": "What is 12+34?"}]
        from transformers import AutoTokenizer
        prompt = AutoTokenizer.from_pretrained(model_dir).apply_chat_template(
            probe, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        ref = checks.reference(model_dir, probe, 4)
        rows = [{"variant": "bf16 (transformers)", "bytes": sum(
            f.stat().st_size for f in model_dir.glob("*.safetensors")),
            **measure(model_dir, prompt, args.tokens)}]
        t = time.monotonic()
        made = gguf.export(model_dir, work / "gguf", "model", args.types.split(","))
        for m in made:
            seen = checks.check_gguf(m["path"], model_dir, probe, ref, 4)
            rows.append({"variant": m["qtype"], "bytes": m["bytes"], "export_s": m["export_s"],
                         "checks": {k: v for k, v in seen.items() if k != "probe"},
                         **measure_gguf(m["path"], prompt, args.tokens)})
        print(json.dumps({"model": args.model, "built_s": round(built_s, 1),
                          "export_all_s": round(time.monotonic() - t, 1)}))
        print("| variant | file | export s | CPU tok/s | GB/s read | memory (peak) |")
        print("|---|--:|--:|--:|--:|--:|")
        for r in rows:
            tps = r["tokens_per_s"]
            print(f"| {r['variant']} | {r['bytes'] / 1e9:.2f} GB | {r.get('export_s', '')} | "
                  f"{tps:.1f} | {tps * r['bytes'] / 1e9:.1f} | {r['rss_bytes'] / 1e9:.2f} GB |")
        print(json.dumps(rows, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
