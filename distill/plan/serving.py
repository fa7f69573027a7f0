"""Serving memory: weights at bf16 / fp8 / int4, the KV cache, and the GPUs and vLLM flags a
model needs to hold a given number of sequences. Reads `Arch` / `Params`, writes nothing.

    weights   per GPU: the total over tensor x pipeline ranks; with data-parallel attention and
              expert parallelism (DP+EP) each GPU keeps all non-expert weights and 1/N of the
              experts. fp8 and int4 quantise the decoder layers; the embedding and the output
              projection stay bf16 (as vLLM and AWQ/GPTQ checkpoints keep them).
    KV cache  per token and layer: 2 x kv_heads x head_dim values (K and V); with MLA
              (DeepSeek-V2/V3) vLLM caches the compressed latent instead, kv_lora_rank +
              qk_rope_head_dim values (576 for DeepSeek-V3: 70x less than K and V of 128 heads).
              Sliding-window layers hold at most their window. Under tensor parallelism each
              GPU holds its share of the KV heads (a whole head when TP > kv_heads), but the MLA
              latent is one vector per token and every TP rank keeps all of it: for MLA models,
              DP+EP holds many more sequences, which is why vLLM's DeepSeek guide recommends it
              under load.
    room      gpu_memory_utilization x capacity, less the weights, less RESERVE_GIB for
              activations, CUDA graphs and the CUDA context (vLLM profiles the real figure when it
              starts and logs the KV cache size it got: trust that over this estimate).

A layout fits when at least one sequence of the full context fits on every rank (vLLM refuses
to start otherwise); the plan then asks for enough GPUs to hold the recipe's concurrency at the
expected sequence length without preemption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.plan.params import BYTES, Arch, Params

GIB = 2**30
RESERVE_GIB = 3.0
NODE = 8                 # GPUs per node: TP and DP+EP stay inside one, PP spans nodes
MAX_GPUS = 64


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float    # as the driver reports it (nvidia-smi / rocm-smi)


GPUS = {
    "H100": GPU("H100 80GB", 79.6),
    "H200": GPU("H200 141GB", 140.4),
    "MI300X": GPU("MI300X 192GB", 191.5),
}
DTYPES = ("bf16", "fp8", "int4")


@dataclass
class Layout:
    gpu: str
    dtype: str
    tp: int
    pp: int
    dp: int
    ep: bool
    weights_gib: float   # per GPU
    room_gib: float      # per GPU, for the KV cache
    seqs_full: int       # sequences of the full context held at once, whole deployment
    seqs_mean: int       # sequences of the expected length held at once
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def name(self) -> str:
        parts = [f"TP{self.tp}"] if self.dp == 1 else [f"DP{self.dp}"]
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        return " x ".join(parts) + (" + EP" if self.ep else "")


def weight_split(a: Arch, p: Params, dtype: str) -> tuple[float, float]:
    """(non-expert, routed-expert) weight bytes in `dtype`. A checkpoint's own format
    (`a.checkpoint`, e.g. gpt-oss's mxfp4 experts) is kept as shipped."""
    tables = p.embedding + p.lm_head
    if dtype == "bf16":
        return p.non_expert * 2.0, p.experts * 2.0
    if dtype == "mxfp4":  # gpt-oss: experts in mxfp4, everything else bf16
        return p.non_expert * 2.0, p.experts * BYTES["mxfp4"]
    b = BYTES[dtype]
    return (p.non_expert - tables) * b + tables * 2.0, p.experts * b


def weights_gib(a: Arch, p: Params, dtype: str) -> float:
    return sum(weight_split(a, p, dtype)) / GIB


def kv_values_per_layer(a: Arch) -> int:
    """Cached values per token per layer: the MLA latent, or K and V of every KV head."""
    if a.mla:
        return a.kv_lora_rank + a.qk_rope_head_dim
    return 2 * a.kv_heads * a.head_dim


def kv_bytes(a: Arch, tokens: int, kv_dtype: str = "bf16", tp: int = 1, pp: int = 1) -> float:
    """KV cache bytes of one sequence of `tokens` on one GPU of a TP x PP group."""
    b = 1.0 if kv_dtype == "fp8" else 2.0
    if a.mla:
        per_layer = kv_values_per_layer(a)       # replicated on every TP rank
    else:
        heads_per_gpu = -(-a.kv_heads // tp)     # ceil: a head is never split
        per_layer = 2 * heads_per_gpu * a.head_dim
    full = a.layers - a.sliding_layers
    slots = full * tokens + a.sliding_layers * min(tokens, a.sliding_window or tokens)
    return slots * per_layer * b / pp


def _layouts(a: Arch, n: int) -> list[tuple[int, int, int, bool]]:
    """(tp, pp, dp, ep) ways to spread a model over n GPUs."""
    out = []
    tp, pp = min(n, NODE), max(1, n // NODE)
    if a.heads % tp == 0 and pp <= a.layers:
        out.append((tp, pp, 1, a.moe and n > 1))
    if a.moe and 1 < n <= NODE:
        out.append((1, 1, n, True))
    return out


def _evaluate(a: Arch, p: Params, gpu: str, dtype: str, tp: int, pp: int, dp: int, ep: bool,
              full_len: int, mean_len: int, kv_dtype: str, util: float) -> Layout:
    non_expert, experts = weight_split(a, p, dtype)
    if dp > 1:
        w = non_expert + experts / dp
    else:
        w = (non_expert + experts) / (tp * pp)
    room = GPUS[gpu].memory_gib * util - RESERVE_GIB - w / GIB
    per_full = kv_bytes(a, full_len, kv_dtype, tp, pp)
    per_mean = kv_bytes(a, mean_len, kv_dtype, tp, pp)

    def held(per_sequence: float) -> int:  # sequences the whole deployment holds at once
        return dp * int(max(room, 0.0) * GIB // per_sequence) if per_sequence else 0

    return Layout(gpu, dtype, tp, pp, dp, ep, w / GIB, round(room, 1),
                  held(per_full), held(per_mean))


def layout_at(a: Arch, p: Params, gpu: str, dtype: str, n: int, full_len: int, mean_len: int,
              kv_dtype: str = "bf16", util: float = 0.9) -> Layout | None:
    """The layout over exactly n GPUs that starts and holds the most sequences, if any."""
    options = [_evaluate(a, p, gpu, dtype, *lay, full_len, mean_len, kv_dtype, util)
               for lay in _layouts(a, n)]
    options = [o for o in options if o.seqs_full >= o.dp]
    return max(options, key=lambda o: (o.seqs_mean, -o.weights_gib)) if options else None


def best_layout(a: Arch, p: Params, gpu: str, dtype: str, full_len: int, mean_len: int,
                want_seqs: int, kv_dtype: str = "bf16", util: float = 0.9) -> tuple[Layout | None, Layout | None]:
    """(smallest layout that starts, smallest that holds `want_seqs` sequences of `mean_len`)."""
    smallest = enough = None
    n = 1
    while n <= MAX_GPUS and enough is None:
        top = layout_at(a, p, gpu, dtype, n, full_len, mean_len, kv_dtype, util)
        if top:
            smallest = smallest or top
            if top.seqs_mean >= want_seqs:
                enough = top
        n *= 2
    return smallest, enough


def recommend(a: Arch, p: Params, gpu: str, dtype: str, full_len: int, mean_len: int,
              want_seqs: int, kv_dtype: str = "bf16", util: float = 0.9) -> tuple[Layout | None, list[str]]:
    """The layout to launch, and what it leaves out. Nodes are what one rents: the plan takes
    the fewest GPUs that hold every sequence in flight when that stays within the smallest
    layout's node(s), else fills those node(s) and lets the rest queue inside vLLM (a batch of
    a few hundred sequences already keeps a node busy; more nodes buy little throughput)."""
    smallest, enough = best_layout(a, p, gpu, dtype, full_len, mean_len, want_seqs, kv_dtype, util)
    if smallest is None:
        return None, [f"does not fit on {MAX_GPUS} GPUs"]
    budget = max(NODE, smallest.gpus) if smallest.gpus <= NODE else smallest.gpus
    if enough and enough.gpus <= budget:
        return enough, []
    lay = layout_at(a, p, gpu, dtype, budget, full_len, mean_len, kv_dtype, util) or smallest
    notes = [f"holds {lay.seqs_mean} of the {want_seqs} sequences in flight at {mean_len:,} tokens; "
             "the rest wait in vLLM's queue"]
    if kv_dtype != "fp8":
        fp8 = _evaluate(a, p, gpu, dtype, lay.tp, lay.pp, lay.dp, lay.ep, full_len, mean_len, "fp8", util)
        notes.append(f"--kv-cache-dtype fp8 would hold {fp8.seqs_mean}")
    if enough:
        notes.append(f"{enough.gpus} GPUs ({enough.name}) hold all {want_seqs}")
    return lay, notes


def reasoning_parser(a: Arch) -> str | None:
    if a.model_type in ("deepseek_v3", "deepseek_v2") and "r1" in a.name.lower():
        return "deepseek_r1"
    if a.model_type.startswith("qwen3"):
        return "qwen3"
    return None


def vllm_command(a: Arch, lay: Layout, model: str, max_model_len: int, max_num_seqs: int,
                 kv_dtype: str, util: float) -> tuple[list[str], list[str]]:
    """The `vllm serve` command line for a layout, and notes on what it needs besides."""
    cmd, notes = ["vllm", "serve", model], []
    if lay.tp > 1:
        cmd += ["--tensor-parallel-size", str(lay.tp)]
    if lay.pp > 1:
        cmd += ["--pipeline-parallel-size", str(lay.pp)]
        notes.append(f"{lay.pp} nodes of {NODE}: start a Ray cluster over them first "
                     "(vLLM multi-node serving) and run the command on the head node")
    if lay.dp > 1:
        cmd += ["--data-parallel-size", str(lay.dp)]
    if lay.ep:
        cmd.append("--enable-expert-parallel")
    cmd += ["--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
            "--gpu-memory-utilization", f"{util:.2f}"]
    if kv_dtype == "fp8":
        cmd += ["--kv-cache-dtype", "fp8"]
    if lay.dtype == "fp8" and a.checkpoint == "bf16":
        cmd += ["--quantization", "fp8"]         # vLLM quantises the bf16 weights on load
    elif lay.dtype == "int4" and a.checkpoint != "int4":
        notes.append("int4 needs an AWQ or GPTQ checkpoint of the model (vLLM reads the format "
                     "from its config): serve that repository instead")
    elif lay.dtype == "bf16" and a.checkpoint in ("fp8", "mxfp4"):
        notes.append(f"the checkpoint ships in {a.checkpoint}: bf16 needs a bf16 copy of it")
    parser = reasoning_parser(a)
    if parser:
        cmd += ["--reasoning-parser", parser]
    return cmd, notes
