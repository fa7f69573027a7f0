"""A byte-level BPE tokenizer for the toy world, trained in about a second on the toy tasks' text.

`toy:teacher-bpe` speaks it, so the toy world has a teacher whose tokenizer differs from the
student's character tokenizer (distill.toy.tokenizer) the way DeepSeek-R1's differs from
Qwen's: cross-tokenizer logit distillation (train.method: gold) has a real case to run on.

It is a standard byte-level BPE (a `tokenizer.json` of vocab and merges, Qwen2's pre-tokenizer:
its split regex, digits one by one, then byte-level), so anything that reads a Qwen2-style
tokenizer reads it. The special tokens and the chat template (with its `{% generation %}`
markers) are the character tokenizer's. Training is deterministic: the same tasks give the
same merges, and the tasks' code is in the cached teacher's key (distill.toy.models).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distill.toy.tokenizer import BOS, END_THINK, EOS, PAD, THINK, byte_level, wrap

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 384  # at most: 256 bytes, 3 specials, the merges seen twice or more (~100)


def corpus() -> list[str]:
    """The text of every toy task of the train split (prompt, reference, the chat roles): what
    the BPE merges are learned from. Eval prompts stay unseen, as for the teacher."""
    from distill.toy.tasks import CATEGORIES, make_tasks
    texts = []
    for family in sorted(CATEGORIES):
        for t in make_tasks(family, None, 0, "train"):
            texts.append(t["messages"][0]["content"])
            texts.append(t["reference"])
            texts.extend(("user\n", "assistant\n"))
    return texts


def build_bpe_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    core = byte_level(Tokenizer(models.BPE(unk_token=None, byte_fallback=False)))
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
        special_tokens=[PAD, EOS, BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # <think> and </think> are split from the text before training, so no merge spells them.
    texts = [t.replace(THINK, " ").replace(END_THINK, " ") for t in corpus()]
    core.train_from_iterator(texts, trainer=trainer)
    return wrap(core)
