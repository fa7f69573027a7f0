"""On-policy distillation (`train.method: on_policy`) with TRL's DistillationTrainer.

The student samples completions of the kept prompts; the teacher scores every token of them and
the student is trained towards the teacher's distribution on its own samples (generalised JSD:
`beta` 0 is forward KL, 1 reverse KL), so it learns from the states it actually reaches rather
than only the teacher's. Two teachers, chosen in the recipe:

- `local`: the teacher model loaded beside the student (`DistillationTrainer`); full-vocabulary
  divergence. Fits when the teacher fits next to the student.
- `server`: the teacher on a vLLM server (`trl.experimental.server_distillation`), which
  returns its top-k logprobs for the student's tokens through `/v1/completions` with
  `prompt_logprobs`. The recipe's `on_policy.teacher_url` or `teacher.base_url`, or else
  distill's own server started on `teacher.model` (it answers the same request).
"""

from __future__ import annotations

import contextlib


def _config_kwargs(cfg, output_dir) -> dict:
    from distill.train.common import trainer_kwargs
    t, op = cfg.train, cfg.train.on_policy
    kw = trainer_kwargs(t, cfg, output_dir)
    kw.update(max_completion_length=op.max_completion_length, temperature=op.temperature,
              beta=op.beta, logging_steps=10)
    return kw


@contextlib.contextmanager
def build_on_policy(cfg, prep, output_dir):
    """Yields the trainer; a server teacher started here lives as long as the block. The
    arguments come before the student: under DeepSpeed ZeRO-3 they make transformers build it
    already sharded."""
    from datasets import Dataset

    from distill.train.common import load_student, peft_config
    from distill.train.data import prompts

    t, op, tok = cfg.train, cfg.train.on_policy, prep.tok
    dataset = Dataset.from_list([{"prompt": p} for p in prompts(prep.data)])
    tok.padding_side = "left"  # TRL generates from left-padded prompts
    if op.teacher == "local":
        from transformers import AutoModelForCausalLM
        from trl import DistillationConfig, DistillationTrainer

        from distill.models import resolve_model
        args = DistillationConfig(**_config_kwargs(cfg, output_dir))
        model = load_student(t, prep)
        key = "train.on_policy.teacher_model" if op.teacher_model else "teacher.model"
        teacher = AutoModelForCausalLM.from_pretrained(
            resolve_model(op.teacher_model or cfg.teacher.model, key=key), dtype=model.dtype)
        if hasattr(teacher.config, "output_router_logits"):  # MoE: the router loss is not ours
            teacher.config.output_router_logits = False
        yield DistillationTrainer(model=model, teacher_model=teacher, args=args, train_dataset=dataset,
                                  processing_class=tok, peft_config=peft_config(t))
        return
    with _teacher_server(cfg) as url:
        yield _server_trainer(cfg, prep, dataset, url, output_dir)


@contextlib.contextmanager
def _teacher_server(cfg):
    op = cfg.train.on_policy
    url = op.teacher_url or cfg.teacher.base_url
    if url:
        yield url.rstrip("/").removesuffix("/v1")
        return
    from distill.serving.launcher import serve_local
    with serve_local(op.teacher_model or cfg.teacher.model, revision=cfg.teacher.revision) as (base, _):
        yield base.removesuffix("/v1")


def _server_trainer(cfg, prep, dataset, url: str, output_dir):
    import trl.generation.vllm_client as vllm_client
    from trl.experimental.server_distillation import ServerDistillationConfig, ServerDistillationTrainer

    from distill.train.common import load_student, peft_config
    op = cfg.train.on_policy
    args = ServerDistillationConfig(**_config_kwargs(cfg, output_dir), teacher_model_server_url=url,
                                    loss_top_k=op.loss_top_k if op.beta == 0 else 1)
    model = load_student(cfg.train, prep)
    # TRL's client refuses to start without vllm installed, because its weight-sync path (NCCL)
    # needs it; teacher scoring is plain HTTP (/v1/completions), so the trainer process needs
    # only `requests` and the server needs vLLM (or distill's server).
    available = vllm_client.is_vllm_available
    vllm_client.is_vllm_available = lambda *a, **k: True
    try:
        return ServerDistillationTrainer(model=model, args=args, train_dataset=dataset,
                                         processing_class=prep.tok, peft_config=peft_config(cfg.train))
    finally:
        vllm_client.is_vllm_available = available
