"""llama.cpp's own HF -> GGUF converter (`convert_hf_to_gguf.py`), run as it is.

setup.sh unpacks it from the llama-cpp-python source package it builds llama.cpp from, into
`.venv/llama.cpp/`, so converter and runtime are the same llama.cpp revision. `DISTILL_LLAMA_CPP`
names another checkout.

    python -m distill.quantize.convert CONVERTER_DIR [converter arguments ...]

One addition, for tokenizers the converter does not know: it recognises a BPE pre-tokenizer by
the hash of one test string's tokens, so a Qwen2-style tokenizer with its own vocabulary (the
toy world's, a fine-tune's extended vocabulary) is refused. When the hash is unknown and the
tokenizer.json's pre-tokenizer is Qwen2's (its split regex, then byte-level), the tokenizer is
written as llama.cpp's `qwen2` pre-tokenizer: the name only selects the split regex llama.cpp
applies before BPE, and that regex is the one in the file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from distill.errors import InputError

CONVERTER = "convert_hf_to_gguf.py"


def converter_dir() -> Path:
    """The folder holding llama.cpp's convert_hf_to_gguf.py (and its `conversion` package)."""
    env = os.environ.get("DISTILL_LLAMA_CPP")
    where = Path(env) if env else Path(sys.prefix) / "llama.cpp"
    if not (where / CONVERTER).is_file():
        how = ("DISTILL_LLAMA_CPP" if env else
               "./setup.sh, which unpacks it from llama-cpp-python's source package")
        raise InputError(f"llama.cpp's converter is not at {where / CONVERTER}: run {how}, "
                         "or set DISTILL_LLAMA_CPP to a llama.cpp checkout")
    return where


def qwen2_split(model_dir: Path) -> bool:
    """Whether model_dir's tokenizer.json pre-tokenizes as Qwen2's does."""
    from distill.toy.tokenizer import SPLIT
    try:
        pre = json.loads((Path(model_dir) / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return False
    steps = pre.get("pretokenizers") or [pre]
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    return regexes == [SPLIT] and any(s.get("type") == "ByteLevel" for s in steps)


def _patch_pre_tokenizer(model_dir: Path) -> None:
    from conversion.base import TextModel
    known = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            if qwen2_split(model_dir):
                return "qwen2"
            raise
    TextModel.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> None:
    where, args = Path(argv[0]), argv[1:]
    sys.path[:0] = [str(where), str(where / "gguf-py")]
    model_dir = Path(next(a for a in args if not a.startswith("-")))
    _patch_pre_tokenizer(model_dir)
    import convert_hf_to_gguf
    sys.argv = [str(where / CONVERTER), *args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
