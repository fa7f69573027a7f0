"""The toy world's architectures: a tiny Qwen3 Mixture-of-Experts teacher and dense Qwen3
students of two widths, both over the character tokenizer of `distill.toy.tokenizer`, built in well
under a second."""

from __future__ import annotations

from distill.toy.tokenizer import build_tokenizer

TEACHER = dict(
    hidden_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=24, intermediate_size=192, moe_intermediate_size=96, num_experts=8,
    num_experts_per_tok=2, norm_topk_prob=True, output_router_logits=True,
    router_aux_loss_coef=0.01, decoder_sparse_step=1, max_position_embeddings=512,
    tie_word_embeddings=True, rope_theta=10000.0,
)

STUDENT = dict(
    hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, intermediate_size=192, max_position_embeddings=512,
    tie_word_embeddings=True, rope_theta=10000.0,
)

# The dense students by name (`toy:<name>`): the demo's, and a wider one with about four
# times its parameters (0.80M against 0.20M; the teacher has 1.01M, 0.49M active per token).
STUDENTS = {
    "student": STUDENT,
    "student-l": {**STUDENT, "hidden_size": 128, "head_dim": 32, "intermediate_size": 384},
}


def _special_ids(tok) -> dict:
    return dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, bos_token_id=None)


def build_teacher(seed: int = 0, tokenizer=None, **overrides):
    """`tokenizer`: another tokenizer than the character one (toy:teacher-bpe's, distill.toy.bpe)."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    tok = tokenizer if tokenizer is not None else build_tokenizer()
    torch.manual_seed(seed)
    config = Qwen3MoeConfig(**{**TEACHER, **overrides}, **_special_ids(tok))
    return Qwen3MoeForCausalLM(config), tok


def build_student(seed: int = 0, name: str = "student", **overrides):
    """The untrained dense student `name` (a key of STUDENTS)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = Qwen3Config(**{**STUDENTS[name], **overrides}, **_special_ids(tok))
    return Qwen3ForCausalLM(config), tok
