"""Logit distillation from the teacher's stored top-k logprobs (`train.method: logit_kd`).

The generate stage keeps, per teacher token, its top-k token ids and logprobs
(`generate.top_logprobs: k`). Here every trace is tokenized with the student's chat template,
the teacher's tokens are located inside the assistant span (same tokenizer: they appear there
verbatim), and the student is trained on

    loss = (1 - w) * CE(trace) + w * KL(p_teacher || p_student)

where the KL runs over the teacher's top-k tokens plus one tail bucket holding the rest of the
probability mass on both sides (so the student is also told how much mass lies outside the
top-k). TRL's trainers compute distillation losses against a teacher model or server at train
time; none reads stored top-k logprobs, so this loss and its collator are written here, on
transformers' Trainer. Traces whose tokens cannot be located (a different tokenizer, a trace
edited after generation) train on the CE term only and are counted in the manifest.
"""

from __future__ import annotations

import torch

from distill.errors import InputError
from distill.train.kd_data import IGNORE, kd_counts



def topk_forward_kl(logits: torch.Tensor, top_ids: torch.Tensor, top_lp: torch.Tensor) -> torch.Tensor:
    """Forward KL(teacher || student) per position over the teacher's top-k plus a tail bucket.

    logits [N, V] (student), top_ids [N, k], top_lp [N, k] (teacher logprobs, -inf where a
    position has fewer than k). The student's log-probabilities of the k tokens are taken as
    logit - logsumexp(logits), which never materialises a second [N, V] tensor.
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    q_k = logits.gather(-1, top_ids) - lse                       # student log q of the top-k
    valid = torch.isfinite(top_lp)
    p_k = torch.where(valid, top_lp.exp(), 0.0)
    p_tail = (1.0 - p_k.sum(-1)).clamp_min(0.0)                 # logprobs are rounded: clamp
    q_mass = torch.where(valid, q_k.exp(), 0.0).sum(-1).clamp(max=1.0 - 1e-6)
    q_tail = torch.log1p(-q_mass)
    kl_k = torch.where(valid, p_k * (torch.where(valid, top_lp, 0.0) - q_k), 0.0).sum(-1)
    kl_tail = torch.where(p_tail > 0, p_tail * (torch.log(p_tail.clamp_min(1e-12)) - q_tail), 0.0)
    return kl_k + kl_tail


class KDCollator:
    """Right-pads a batch; teacher targets become dense [B, T, k] tensors aligned with input_ids
    (row t holds the teacher's distribution for the token at position t)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)
        k = max([len(r) for b in batch for r in b["kd_ids"][:1]] + [1])
        B = len(batch)
        ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        labels = torch.full((B, width), IGNORE, dtype=torch.long)
        attn = torch.zeros((B, width), dtype=torch.long)
        kd_ids = torch.zeros((B, width, k), dtype=torch.long)
        kd_lp = torch.full((B, width, k), float("-inf"))
        kd_mask = torch.zeros((B, width), dtype=torch.bool)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            attn[i, :n] = 1
            if b["kd_start"] >= 0 and b["kd_ids"]:
                s, m = b["kd_start"], len(b["kd_ids"])
                kd_ids[i, s:s + m] = torch.tensor(b["kd_ids"])
                kd_lp[i, s:s + m] = torch.tensor(b["kd_lp"], dtype=torch.float)
                kd_mask[i, s:s + m] = True
        kd_mask[:, 0] = False  # position 0 has no prediction
        return {"input_ids": ids, "attention_mask": attn, "labels": labels,
                "kd_ids": kd_ids, "kd_lp": kd_lp, "kd_mask": kd_mask}


def _trainer_class():
    from transformers import Trainer

    class LogitKDTrainer(Trainer):
        def __init__(self, *args, kd_weight: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.kd_weight = kd_weight
            self.model_accepts_loss_kwargs = False  # losses are per-batch means; GA divides them
            self._parts: dict[str, list[float]] = {"ce": [], "kd": []}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            logits = out.logits[:, :-1]
            labels = inputs["labels"][:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE)
            sel = inputs["kd_mask"][:, 1:]
            if self.kd_weight > 0 and sel.any():
                kd = topk_forward_kl(logits[sel], inputs["kd_ids"][:, 1:][sel],
                                     inputs["kd_lp"][:, 1:][sel]).mean()
            else:
                kd = ce.new_zeros(())
            loss = (1 - self.kd_weight) * ce + self.kd_weight * kd
            self._parts["ce"].append(ce.item())
            self._parts["kd"].append(kd.item())
            return (loss, out) if return_outputs else loss

        def log(self, logs: dict, start_time: float | None = None) -> None:
            for name, values in self._parts.items():
                if values:
                    logs[f"{name}_loss"] = round(sum(values) / len(values), 4)
                    values.clear()
            super().log(logs, start_time)

    return LogitKDTrainer


def build_kd(cfg, prep, output_dir):
    """The trainer and the alignment counts (kept in the train manifest). The arguments come
    first: under DeepSpeed ZeRO-3 they make transformers build the model already sharded."""
    from transformers import TrainingArguments

    from distill.train.common import load_student, peft_config, trainer_kwargs
    from distill.train.data import tokenize

    t = cfg.train
    args = TrainingArguments(**trainer_kwargs(t, cfg, output_dir), remove_unused_columns=False)
    with args.main_process_first(desc="tokenizing"):
        dataset, dropped = tokenize(prep.data, prep.cache, prep.tok, end_of_turn=prep.end_of_turn,
                                    max_length=t.max_length, method="logit_kd", stop_ids=prep.stop_ids)
    counts = kd_counts(dataset, dropped)
    with_lp = counts["aligned"] + counts["unaligned"]
    if with_lp == 0:
        raise InputError("train.method is logit_kd but no kept trace has teacher logprobs: set "
                         "generate.top_logprobs (e.g. 8) and generate again", key="train.method")
    if counts["unaligned"] > 0.5 * with_lp:
        raise InputError(
            f"{counts['unaligned']} of {with_lp} traces' teacher tokens were not found in the student's "
            "tokenization: the teacher's tokenizer is not the student's (or the traces were edited); "
            "logit distillation needs the same vocabulary (use method: sft)", key="train.method")
    dataset = dataset.remove_columns(["kd_status", "kd_tokens"])
    model = load_student(t, prep)
    pc = peft_config(t)
    if pc is not None:
        from peft import get_peft_model
        model = get_peft_model(model, pc)
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset,
                               data_collator=KDCollator(prep.tok.pad_token_id), processing_class=prep.tok,
                               kd_weight=t.kd.weight)
    return trainer, counts
