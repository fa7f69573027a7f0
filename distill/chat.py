"""The student's chat template and tokens: reads the student's tokenizer and the recipe's
`train.chat_template` / `end_of_turn_token` / `pad_token`; returns the tokenizer set up for
training and each conversation as input_ids with its assistant-loss mask.

The mask comes from the student's real template, not from `{% generation %}` markers or a
template TRL assumes (TRL's `get_training_chat_template` knows templates by exact string
equality, and none of the base students' templates: Qwen2.5-Math, Qwen2.5, Qwen3-Base). Per
record: the prompt (every message but the last, with the generation prompt) renders to P, the
whole conversation to F; F must start with P, and the example is tokens(P) + tokens(C), C being
F past P up to and including the end-of-turn token. That is what a server sees at inference: it
tokenizes P and generates from there, and must learn to write C and stop. What the template
writes after the end-of-turn token (ChatML's "\\n") is not trained.

Qwen base tokenizers have EOS = pad = <|endoftext|> while their templates end a turn with
<|im_end|>: the end-of-turn token becomes the tokenizer's EOS and, with the original EOS, the
model's stop tokens (as Qwen2.5-Instruct ships them), so distill's server and vLLM stop on it.
"""

from __future__ import annotations

from pathlib import Path

from distill.errors import InputError

PROBE_PROMPT, PROBE_REASONING, PROBE_ANSWER = "What is 17+25?", "REASONING-PROBE 17+25", "ANSWER-PROBE 42"
PROBE = [{"role": "user", "content": PROBE_PROMPT},
         {"role": "assistant", "content": f"<think>{PROBE_REASONING}</think>{PROBE_ANSWER}"}]


def read_template(value: str) -> str:
    """`train.chat_template`: the template text itself, or the path of a Jinja file (as given,
    else relative to the repository, like the shipped configs)."""
    if "{%" in value or "{{" in value:
        return value
    from distill.config import CONFIG_DIR
    for path in (Path(value), CONFIG_DIR.parent / value):
        if path.is_file():
            return path.read_text()
    raise InputError("chat template file not found (give a Jinja file or the template text)",
                     key="train.chat_template", file=value)


def _token_id(tok, token: str, key: str) -> int:
    ids = tok(token, add_special_tokens=False).input_ids
    if len(ids) != 1 or token not in tok.get_vocab():
        raise InputError(f"{token!r} is not one token of the student's vocabulary (it encodes to "
                         f"{len(ids)} tokens)", key=key)
    return ids[0]


def detect_end_of_turn(tok) -> str | None:
    """The added token the template writes right after the assistant's content in the probe
    conversation (ChatML's <|im_end|>), or None."""
    text = tok.apply_chat_template(PROBE, tokenize=False)
    at = text.rfind(PROBE_ANSWER)
    if at < 0:
        return None
    rest = text[at + len(PROBE_ANSWER):]
    added = sorted({t.content for t in tok.added_tokens_decoder.values()}, key=len, reverse=True)
    return next((a for a in added if a and rest.startswith(a)), None)


def prepare_tokenizer(t, path: str):
    """The student's tokenizer with the recipe's template, pad and end-of-turn tokens, checked.
    Returns (tokenizer, stop_ids): stop_ids are [end-of-turn id, original EOS id] (one id when
    they are the same), what the saved model's config and generation config stop on."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=t.revision)
    if t.chat_template:
        tok.chat_template = read_template(t.chat_template)
    if not tok.chat_template:
        raise InputError(f"the tokenizer of {t.student!r} has no chat template; set train.chat_template",
                         key="train.chat_template")
    original_eos = tok.eos_token_id
    eot = t.end_of_turn_token or detect_end_of_turn(tok)
    if eot is None:
        raise InputError(
            f"cannot tell which token of {t.student!r}'s chat template ends an assistant turn (no "
            "special token follows the assistant's content in a probe conversation); set "
            "train.end_of_turn_token", key="train.end_of_turn_token")
    eot_id = _token_id(tok, eot, "train.end_of_turn_token")
    if t.pad_token:
        _token_id(tok, t.pad_token, "train.pad_token")
        tok.pad_token = t.pad_token
    elif tok.pad_token is None:
        # pad == EOS is harmless here (see the note below); TRL makes the same choice.
        tok.pad_token = tok.eos_token
    tok.eos_token = eot
    check_template_keeps_reasoning(tok, t.student, eot)
    stop_ids = list(dict.fromkeys(i for i in (eot_id, original_eos) if i is not None))
    return tok, stop_ids


# Why a pad token equal to EOS is allowed (R1-Distill-Qwen ships pad == eos ==
# <｜end▁of▁sentence｜>): no collator here derives labels from pad ids. TRL 1.16's SFT collator
# pads the labels column (built from the assistant mask) with -100 and builds the attention mask
# from lengths; kd.KDCollator does the same; TRL's DistillationTrainer masks a completion after
# its first stop token and pads with a separate mask. The old failure (labels[ids == pad] = -100
# masking every EOS, so the student never stops) needs a collator that reads pad ids, which none
# of the three does. tests/test_train.py proves the EOS label survives padding for SFT and KD.


def tokenize_chat(messages: list[dict], tok, end_of_turn: str, where: str) -> tuple[list[int], list[int]]:
    """input_ids and the assistant-loss mask of one conversation whose last message is the
    assistant's (see the module docstring). `where` names the record in errors."""
    if not messages or messages[-1].get("role") != "assistant":
        raise InputError(f"{where}: the last message is not the assistant's; a training record is a "
                         "prompt followed by the trace")
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise InputError(
            f"{where}: the chat template is not prefix-preserving: the conversation rendered whole does "
            "not start with its prompt rendered with the generation prompt, so the student would learn "
            "to continue a text a server never sends; use a template (train.chat_template) whose "
            "assistant turn starts with its generation prompt")
    completion = full[len(prompt):]
    end = completion.rfind(end_of_turn)
    if end < 0:
        raise InputError(
            f"{where}: the chat template writes no {end_of_turn!r} after the assistant's answer: the "
            "student would never be taught to stop; set train.end_of_turn_token or train.chat_template")
    completion = completion[:end + len(end_of_turn)]
    p = tok(prompt, add_special_tokens=False).input_ids
    c = tok(completion, add_special_tokens=False).input_ids
    return p + c, [0] * len(p) + [1] * len(c)


def check_template_keeps_reasoning(tok, student: str, end_of_turn: str | None = None) -> None:
    """Renders the probe conversation: the reasoning must survive inside `<think>`, and the mask
    must cover the reasoning, the answer and the end-of-turn token (or the student never stops)
    and nothing of the prompt."""
    text = tok.apply_chat_template(PROBE, tokenize=False)
    if PROBE_REASONING not in text or "<think>" not in text:
        raise InputError(
            f"the chat template of {student!r} drops the <think> reasoning from assistant turns (as "
            "DeepSeek-R1-Distill's template does with `content.split('</think>')[-1]`): the student "
            "would learn answers without their reasoning; use a template that keeps the assistant "
            "content as it is (train.chat_template)", key="train.chat_template")
    eot = end_of_turn or detect_end_of_turn(tok)
    if eot is None:
        raise InputError(f"the chat template of {student!r} writes no end-of-turn token after the "
                         "assistant's answer: the student would never be taught to stop; set "
                         "train.end_of_turn_token", key="train.end_of_turn_token")
    ids, mask = tokenize_chat(PROBE, tok, eot, f"the probe conversation of {student!r}")
    trained = [i for i, m in zip(ids, mask) if m]
    text = tok.decode(trained, skip_special_tokens=False)
    prompt = tok.decode([i for i, m in zip(ids, mask) if not m], skip_special_tokens=False)
    if PROBE_REASONING not in text or PROBE_ANSWER not in text or PROBE_PROMPT in text:
        raise InputError(f"the assistant mask of {student!r}'s chat template does not cover exactly "
                         "the assistant's reasoning and answer", key="train.chat_template")
    if trained[-1] != tok.convert_tokens_to_ids(eot):
        raise InputError(f"the assistant mask of {student!r} does not end with {eot!r}: the student "
                         "would never be taught to stop", key="train.end_of_turn_token")
    if PROBE_ANSWER in prompt:
        raise InputError(f"{student!r}'s chat template puts the answer in the prompt", key="train.chat_template")
