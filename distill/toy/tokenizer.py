"""A character-level tokenizer with a chat template, built offline in milliseconds.

It is a real `PreTrainedTokenizerFast` (a BPE with no merges, so every character is a token),
so it saves, loads with `AutoTokenizer`, and works with TRL, `transformers serve` and the
project's server like any Hub tokenizer. Pad differs from EOS; `<think>`/`</think>` are single
tokens that survive decoding; the chat template marks the assistant turn with
`{% generation %}` for TRL's assistant-only loss.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD, EOS, BOS = "<|pad|>", "<|im_end|>", "<|im_start|>"
THINK, END_THINK = "<think>", "</think>"

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}"
    "{%- if message.get('reasoning_content') %}{{ '<think>' + message['reasoning_content'] + '</think>' }}{%- endif %}"
    "{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}"
    "{{ '\\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    chars = [PAD, EOS, BOS, THINK, END_THINK, "\n"] + [chr(i) for i in range(32, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS,
                                  bos_token=None, clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"additional_special_tokens": [BOS]})
    tok.add_tokens([THINK, END_THINK], special_tokens=False)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    tok.model_max_length = 512
    return tok
