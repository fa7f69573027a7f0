"""A character-level tokenizer with a chat template, built offline in milliseconds.

It is a real `PreTrainedTokenizerFast`: a byte-level BPE over printable ASCII whose one merge
never applies, so every character is a token. Byte-level as Qwen2's is (its pre-tokenizer split, then bytes
mapped to printable characters: " " is stored as "Ġ", "\n" as "Ċ"), so it saves, loads with
`AutoTokenizer`, works with TRL, `transformers serve` and the project's server like any Hub
tokenizer, and llama.cpp's GGUF converter reads it as a Qwen2-style BPE (distill/quantize/). Pad differs from EOS; `<think>`/`</think>` are single
tokens that survive decoding; the chat template marks the assistant turn with
`{% generation %}` for TRL's assistant-only loss.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
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


# Qwen2's pre-tokenizer split (tokenizer.json of Qwen2.5): words, single digits, punctuation runs,
# newlines, spaces.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(core: Tokenizer) -> Tokenizer:
    """Qwen2's normalizer, pre-tokenizer, decoder and post-processor on `core` (a BPE)."""
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                               use_regex=False)
    return core


def build_tokenizer() -> PreTrainedTokenizerFast:
    # Ids as ever: the specials, newline, space, then printable ASCII; byte-level spells newline
    # and space as "Ċ" and "Ġ". llama.cpp needs a BPE to have merges, and a GGUF file cannot
    # hold an empty list, so there is one: newline + space, which never applies (Qwen2's split
    # never puts a space after a newline in one piece), in the id of "~", which no toy text uses.
    chars = [PAD, EOS, BOS, THINK, END_THINK, "\u010a", "\u0120"] + [chr(i) for i in range(33, 127)]
    chars[chars.index("~")] = "\u010a\u0120"
    vocab = {c: i for i, c in enumerate(chars)}
    return wrap(byte_level(Tokenizer(models.BPE(vocab=vocab, merges=[("\u010a", "\u0120")],
                                                unk_token=None))))


def wrap(core: Tokenizer) -> PreTrainedTokenizerFast:
    """`core` as the toy world's tokenizer: pad, EOS, <|im_start|> special, <think> and
    </think> single tokens, the chat template, left padding."""
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS,
                                  bos_token=None, clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"additional_special_tokens": [BOS]})
    tok.add_tokens([THINK, END_THINK], special_tokens=False)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    tok.model_max_length = 512
    return tok
