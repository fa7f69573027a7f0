"""Weight-only int8 / int4 checkpoints with torchao: reads a model directory (config.json, safetensors
weights, tokenizer files, chat template), writes a quantized copy that
`AutoModelForCausalLM.from_pretrained` loads as it is, quantized; `measure` loads any model
directory, quantized or not, in a child process and reports its peak memory, load time and decode
speed.

What is quantized: the weight of every `nn.Linear` but `lm_head` (attention q/k/v/o and the MLP's
gate/up/down projections); the embedding table, `lm_head` (tied to it in the small Qwen models) and
the norms keep the checkpoint's dtype. Activations stay in that dtype too (weight-only). MoE
experts that transformers keeps as one 3-D parameter per layer are not `nn.Linear` and stay as
they are.

The formats, as torch 2.13 / torchao 0.18 / transformers 5.24 allow on a CPU:
  int8: `Int8WeightOnlyConfig`, one scale per output row (`Int8Tensor`).
  int4: `IntxWeightOnlyConfig(weight_dtype=torch.int4)`, symmetric, one scale per group of
        `group_size` inputs (`IntxUnpackedToInt8Tensor`), each scale chosen by HQQ (half-quadratic
        optimisation of the rounding error, no calibration data; what torchao's
        published int4 checkpoints use) rather than from the group's largest weight. On two
        trained toy students' whole toy_arith eval split (846 questions) plain rounding kept
        92.7% and 52.0% against the float model's 97.8% and 87.4%; HQQ kept 94.8% and 72.1%. The
        int4 values are stored one per byte, so on disk and in memory int4 takes about what int8
        takes: its gain is the 16 levels' reach on hardware with an int4 kernel, not bytes here.
        The packed layouts are out of reach: `Int4WeightOnlyConfig`'s plain layout needs the
        mslk CUDA kernels, tile_packed_to_4d needs CUDA and plain_int32 XPU or NPU; the CPU one
        (`PrototypeInt4WeightOnlyConfig`, `Int4OpaqueTensor`, two values a byte) runs, but
        transformers cannot save it (torchao's safetensors support does not list it) and it has
        no other checkpoint format.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from distill.errors import InputError
from distill.quantize.measure import status_bytes

SCHEMES = ("int8", "int4")
# How each scheme picks its scales: part of a variant's key, so a checkpoint made another way is
# made again.
METHODS = {"int8": "per-row absmax", "int4": "per-group HQQ scales, symmetric"}
GROUP_SIZES = (128, 64, 32)            # int4: the largest that divides every Linear's inputs
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# What a servable model directory needs besides config.json and the weights.
SERVING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
                 "chat_template.jinja", "chat_template.json", "generation_config.json")


def _check_dir(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file():
        raise InputError("not a model directory: no config.json", file=str(model_dir))


def linear_inputs(model_dir: Path) -> dict[str, int]:
    """in_features of each Linear that is quantized (all but lm_head), from the model built on
    the meta device."""
    import torch
    from transformers import AutoConfig

    from distill.models import meta_model
    model = meta_model(AutoConfig.from_pretrained(model_dir))
    return {name: m.in_features for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name != "lm_head"}


def group_size_for(inputs: dict[str, int], wanted: int | None = None) -> int:
    """The int4 group size: `wanted` if it divides every Linear's in_features, else the largest
    of GROUP_SIZES that does. A Linear whose inputs the group does not divide would be left
    unquantized by torchao without a word, so it is an error here."""
    if wanted is not None:
        odd = sorted(n for n, k in inputs.items() if k % wanted)
        if odd:
            raise InputError(f"group size {wanted} does not divide the in_features of {odd[0]} "
                             f"({inputs[odd[0]]}) and {len(odd) - 1} other Linear layer(s)",
                             key="group_size")
        return wanted
    for g in GROUP_SIZES:
        if all(k % g == 0 for k in inputs.values()):
            return g
    raise InputError(f"none of the group sizes {GROUP_SIZES} divides the in_features of every "
                     f"Linear layer ({sorted(set(inputs.values()))})", key="group_size")


def _torchao_config(scheme: str, group_size: int | None) -> Any:
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup
    from torchao.quantization.quantize_.workflows.intx.intx_choose_qparams_algorithm import (
        IntxChooseQParamsAlgorithm,
    )
    # set_inductor_config: nothing here compiles, and it would change torch's global settings.
    if scheme == "int8":
        return Int8WeightOnlyConfig(set_inductor_config=False)
    # torch.int4 is missing from torch's type stubs.
    return IntxWeightOnlyConfig(
        weight_dtype=torch.int4,  # type: ignore[attr-defined]
        granularity=PerGroup(group_size),
        intx_choose_qparams_algorithm=IntxChooseQParamsAlgorithm.HQQ_SCALE_ONLY)


def weight_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).iterdir()
               if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def quantize_checkpoint(model_dir: Path, out_dir: Path, scheme: str,
                        group_size: int | None = None) -> dict:
    """Quantizes the checkpoint at `model_dir` weight-only (`scheme`: int8 or int4) into
    `out_dir`, a complete model directory (config.json with its quantization_config, weights,
    tokenizer, chat template, generation config) written whole or not at all.
    `group_size`: int4's inputs per scale (None: the largest of 128/64/32 that fits); int8
    keeps one scale per row and takes none."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_dir(model_dir)
    if scheme not in SCHEMES:
        raise InputError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}", key="scheme")
    if scheme == "int8":
        if group_size is not None:
            raise InputError("int8 is quantized per output row and takes no group size",
                             key="group_size")
    else:
        group_size = group_size_for(linear_inputs(model_dir), group_size)

    from transformers import AutoModelForCausalLM, TorchAoConfig
    config = TorchAoConfig(_torchao_config(scheme, group_size), modules_to_not_convert=["lm_head"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        for name in SERVING_FILES:   # the source's own, over what save_pretrained wrote
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"format": "torchao", "scheme": scheme, "path": str(out_dir),
            "bytes": weight_bytes(out_dir), "group_size": group_size}


# ------------------------------------------------------------------------------ measuring

def measure(model_dir: Path, prompt_ids: list[int], new_tokens: int = 64,
            threads: int | None = None) -> dict:
    """Loads `model_dir` in a fresh Python process (so the peak RSS is that model's, plus
    Python's, torch's and transformers' own) and greedily decodes `new_tokens` tokens after
    `prompt_ids`, one stream, never stopping early. Returns rss_bytes (the child's peak RSS),
    rss_before_load_bytes (its RSS with the libraries imported, before the model), load_s
    (from_pretrained), tokens_per_s (decode: tokens after the first over the time after it)."""
    model_dir = Path(model_dir)
    _check_dir(model_dir)
    if new_tokens < 2:
        raise InputError("measure needs at least 2 new tokens (decode speed is timed after the "
                         "first)", key="new_tokens")
    args = json.dumps({"model_dir": str(model_dir), "prompt_ids": list(prompt_ids),
                       "new_tokens": new_tokens, "threads": threads})
    code = "import sys; from distill.quantize.torchao import _measure_here; _measure_here(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {model_dir} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _measure_here(blob: str) -> None:
    """The child's side of `measure`: prints one JSON line."""
    import time

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer
    try:
        import torchao  # noqa: F401  (a quantized checkpoint's tensor types)
    except ImportError:
        pass
    a = json.loads(blob)
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    before = status_bytes("VmRSS")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a["model_dir"])
    model.eval()
    load_s = time.perf_counter() - t0

    class Clock(BaseStreamer):
        """When each new token arrives (the first `put` is the prompt)."""
        def __init__(self) -> None:
            self.times: list[float] = []
            self.calls = 0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls > 1:
                self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    ids = torch.tensor([a["prompt_ids"]])
    n = a["new_tokens"]

    def run(tokens: int, streamer: Any = None) -> None:
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=tokens, min_new_tokens=tokens, streamer=streamer)
    run(2)   # warm-up: first-call dispatch and allocation are no part of the decode speed
    clock = Clock()
    run(n, clock)
    decode_s = clock.times[-1] - clock.times[0]
    peak = status_bytes("VmHWM")
    print(json.dumps({"rss_bytes": peak, "rss_before_load_bytes": before,
                      "model_rss_bytes": peak - before, "load_s": load_s,
                      "tokens_per_s": (len(clock.times) - 1) / decode_s,
                      "new_tokens": len(clock.times)}))
