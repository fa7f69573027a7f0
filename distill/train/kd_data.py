"""The examples of logit distillation: each trace tokenized with the student's chat template,
and the teacher's stored top-k targets located inside its assistant span
(`distill.train.kd` trains on them). Written for `Dataset.map` (`distill.train.data.tokenize`)."""

from __future__ import annotations

from typing import Any

from distill.errors import InputError

IGNORE = -100


def _ids(tok, tokens: list) -> list[int] | None:
    out = []
    for t in tokens:
        if isinstance(t, int):
            out.append(t)
            continue
        i = tok.convert_tokens_to_ids(t)
        if i is None or i == tok.unk_token_id:
            return None
        out.append(i)
    return out


def _find(ids: list[int], mask: list[int], target: list[int]) -> int | None:
    n = len(target)
    for s in range(len(ids) - n + 1):
        if mask[s] and ids[s] == target[0] and ids[s:s + n] == target and all(mask[s:s + n]):
            return s
    return None


def kd_example(ids: list[int], mask: list[int], lp: dict | None, tok, stop_ids: list[int]) -> tuple[dict, str]:
    """One example with its teacher targets, and whether they were aligned, unaligned, or absent."""
    ex: dict[str, Any] = {"input_ids": ids, "labels": [t if m else IGNORE for t, m in zip(ids, mask)],
          "kd_start": -1, "kd_ids": [], "kd_lp": []}
    if not lp or not lp.get("tokens"):
        return ex, "no_logprobs"
    teacher = _ids(tok, lp["tokens"])
    top = [_ids(tok, row) for row in lp["top_ids"]]
    start = None
    if teacher is not None and all(r is not None for r in top):
        start = _find(ids, mask, teacher)
        if start is None and teacher and teacher[-1] in stop_ids:
            teacher = teacher[:-1]  # a template that ends the turn with the other stop token
            start = _find(ids, mask, teacher) if teacher else None
    if start is None or teacher is None:
        return ex, "unaligned"
    n = len(teacher)
    rows = [r or [] for r in top[:n]]  # all located: none is None here
    k = max(len(r) for r in rows)
    ex["kd_start"] = start
    ex["kd_ids"] = [r + [0] * (k - len(r)) for r in rows]
    ex["kd_lp"] = [lps + [float("-inf")] * (k - len(lps)) for lps in lp["top_logprobs"][:n]]
    return ex, "aligned"


def kd_features():
    from datasets import Features, List, Value
    return Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")),
                     "kd_start": Value("int32"), "kd_ids": List(List(Value("int32"))),
                     "kd_lp": List(List(Value("float32"))), "kd_status": Value("string"),
                     "kd_tokens": Value("int32")})


def kd_batch(batch: dict, tok, end_of_turn: str, max_length: int, stop_ids: list[int]) -> dict:
    """`Dataset.map` function (distill.train.data.tokenize): tokenized traces with their
    teacher targets; traces longer than max_length are left out."""
    import json

    from distill.chat import tokenize_chat
    out: dict = {k: [] for k in kd_features()}
    for rid, m, lp in zip(batch["id"], batch["messages"], batch["teacher_logprobs"]):
        ids, mask = tokenize_chat(json.loads(m), tok, end_of_turn, f"dataset record {rid}")
        if len(ids) > max_length:
            continue
        ex, status = kd_example(ids, mask, json.loads(lp) if lp else None, tok, stop_ids)
        for k, v in ex.items():
            out[k].append(v)
        out["kd_status"].append(status)
        out["kd_tokens"].append(len(ex["kd_ids"]))
    return out


def kd_counts(ds, dropped: int) -> dict:
    """What could be aligned, from two small columns of the examples."""
    status = list(ds["kd_status"])
    return {"aligned": status.count("aligned"), "unaligned": status.count("unaligned"),
            "no_logprobs": status.count("no_logprobs"), "kd_tokens": sum(list(ds["kd_tokens"])),
            "dropped_too_long": dropped}


def kd_examples(records: list[dict], tok, max_length: int, end_of_turn: str | None = None,
                stop_ids: list[int] | None = None) -> tuple[list[dict], dict]:
    """kd_batch over a list of records: the examples and the alignment counts."""
    import json

    from distill.chat import detect_end_of_turn
    eot = end_of_turn or detect_end_of_turn(tok)
    if eot is None:
        raise InputError("the student's chat template ends no turn with an added token: set "
                         "train.end_of_turn_token", key="train.end_of_turn_token")
    stops = stop_ids or [tok.convert_tokens_to_ids(eot), tok.eos_token_id]
    rows = kd_batch({"id": [r.get("id") for r in records],
                     "messages": [json.dumps(r["messages"]) for r in records],
                     "teacher_logprobs": [json.dumps(r["teacher_logprobs"]) if r.get("teacher_logprobs") else None
                                          for r in records]}, tok, eot, max_length, stops)
    status = rows.pop("kd_status")
    rows.pop("kd_tokens")
    examples = [dict(zip(rows, values)) for values in zip(*rows.values())]
    if not examples:
        raise InputError(f"all {len(records)} training records are longer than train.max_length "
                         f"({max_length} tokens); raise it", key="train.max_length")
    counts = {"aligned": status.count("aligned"), "unaligned": status.count("unaligned"),
              "no_logprobs": status.count("no_logprobs"),
              "kd_tokens": sum(len(e["kd_ids"]) for e in examples), "dropped_too_long": len(records) - len(examples)}
    return examples, counts
