"""The context of a model this stage serves with vLLM: reads the model's tokenizer (its chat
template) and config.json and the benchmarks' prompts, returns the `--max-model-len` to start
`vllm serve` with and each prompt's length in tokens, so that every request asks for at most
the new tokens that fit.

Why: vLLM starts at the model's own positions (a base Qwen2.5-Math-7B has 4,096) and answers a
request whose prompt plus max_tokens does not fit with a 400; a model with 131,072 positions
would reserve KV cache for contexts no benchmark needs. So: --max-model-len is eval.max_model_len
when the recipe sets it, else the longest prompt plus the largest max_tokens, capped at what
the model's config.json allows; a request's max_tokens is clamped to max_model_len minus its
prompt. Prompts are counted as vLLM's chat endpoint counts them: the messages through the
tokenizer's chat template with the generation prompt, encoded without added special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.errors import InputError


@dataclass(frozen=True)
class Context:
    max_model_len: int
    prompt_tokens: dict[str, int]     # problem id -> tokens of its prompt, template applied
    why: str                          # how max_model_len was chosen, for the log

    def max_tokens(self, problem_id: str, wanted: int) -> int:
        """The new tokens a request for this problem may ask for (below 1: its prompt alone
        does not fit)."""
        return min(wanted, self.max_model_len - self.prompt_tokens[problem_id])


def position_limit(config: dict) -> int | None:
    """The longest context config.json allows, as vLLM derives it: max_position_embeddings,
    times the RoPE scaling factor for the scalings that extend it (yarn from its
    original_max_position_embeddings); llama3 and longrope already count theirs."""
    config = config.get("text_config") or config
    limit = config.get("max_position_embeddings")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = rope.get("rope_type") or rope.get("type")
    if limit and rope.get("factor") and kind not in ("su", "longrope", "llama3"):
        if kind == "yarn":
            limit = rope.get("original_max_position_embeddings") or limit
        limit = int(limit * rope["factor"])
    return limit


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of `flag` in a command line (`--flag V` or `--flag=V`), else None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def count_prompts(model: str, revision: str | None, problems: list[dict]) -> dict[str, int]:
    """problem id -> tokens of its messages through `model`'s chat template."""
    from transformers import AutoTokenizer

    from distill.models import resolve_model as resolve

    try:
        tok = AutoTokenizer.from_pretrained(resolve(model), revision=revision)
    except Exception as e:  # noqa: BLE001  (not found, offline, gated)
        raise InputError(f"cannot load the tokenizer of {model} to size vLLM's context: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                         key="eval.server") from None
    if not tok.chat_template:
        raise InputError(f"{model} has no chat template: vLLM's chat endpoint cannot serve it",
                         key="eval.server")
    texts = [tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
             for p in problems]
    ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    return {p["id"]: len(i) for p, i in zip(problems, ids)}


def plan_context(model: str, revision: str | None, problems: list[dict], max_tokens: int,
                 fixed: int | None = None) -> Context:
    """The context to serve `model` with for these problems (see the module docstring);
    `max_tokens` is the largest any request asks for, `fixed` the recipe's own length."""
    from distill.plan.params import load_config
    from distill.models import resolve_model as resolve

    counts = count_prompts(model, revision, problems)
    if fixed is not None:
        return Context(fixed, counts, "eval.max_model_len")
    longest = max(counts.values(), default=0)
    want = longest + max_tokens
    config, source = load_config(resolve(model), revision)
    limit = position_limit(config)
    if limit is not None and limit < want:
        return Context(limit, counts, f"max_position_embeddings of {source} ({limit}; the "
                                      f"longest prompt {longest} + max_tokens {max_tokens} "
                                      f"= {want} does not fit)")
    return Context(want, counts, f"the longest prompt {longest} + max_tokens {max_tokens}")
