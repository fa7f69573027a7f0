"""What must survive an export, checked on the file itself, failing loudly (InputError naming the
file and every check it failed) instead of leaving a model that loops inside <think> or never
stops for the user to find:

- the chat template the GGUF holds renders the probe conversation exactly as the model's own;
- the file loads back with llama.cpp and tokenizes the rendered conversation to the same ids;
- every token the model ends a turn with (EOS, the template's end of turn, generation_config's
  eos ids) is an end-of-generation token for llama.cpp, spelled as in the tokenizer;
- `<think>` and `</think>` stay single tokens and decode back to themselves;
- asked the probe question greedily, the quantized model stops by itself within
  quantize.probe_max_tokens, when the unquantized student does (`reference`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import InputError

log = logging.getLogger(__name__)

PROBE_TURNS = [  # before the probe question: a full earlier exchange, with its reasoning
    {"role": "user", "content": "Say hi."},
    {"role": "assistant", "content": "hi", "reasoning_content": "a greeting"},
]


@dataclass
class Reference:
    """The unquantized student on the probe: its greedy answer and whether it stopped."""
    text: str
    stopped: bool


def render(template: str, messages: list[dict], tok, generation_prompt: bool = True) -> str:
    """`template` rendered as transformers renders chat templates (generation markers known)."""
    from transformers.utils.chat_template_utils import render_jinja_template
    out: Any = render_jinja_template(conversations=[messages], chat_template=template,
                                     add_generation_prompt=generation_prompt,
                                     **tok.special_tokens_map)
    return out[0][0]


def end_ids(model_dir: Path, tok) -> dict[int, str]:
    """The tokens the model ends an answer with: EOS, generation_config's eos ids and the chat
    template's end of turn."""
    import json

    from distill.chat import detect_end_of_turn
    ids: set[Any] = {tok.eos_token_id}
    gen = Path(model_dir) / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids |= set(eos if isinstance(eos, list) else [eos])
    eot = detect_end_of_turn(tok) if tok.chat_template else None
    if eot is not None:
        ids.add(tok.convert_tokens_to_ids(eot))
    return {i: tok.convert_ids_to_tokens(i) for i in ids if i is not None}


def reference(model_dir: Path, probe: list[dict], max_tokens: int) -> Reference:
    """The unquantized student's greedy answer to the probe (transformers, CPU or GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids: Any = tok.apply_chat_template(probe, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    ends = end_ids(model_dir, tok)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=list(ends), pad_token_id=tok.pad_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    stopped = bool(new) and new[-1] in ends
    return Reference(tok.decode(new, skip_special_tokens=True), stopped)


def check_gguf(path: Path, model_dir: Path, probe: list[dict], ref: Reference,
               max_tokens: int, threads: int | None = None) -> dict:
    """Runs every check on the GGUF at `path` in a child process; returns what they saw, or
    raises InputError listing each check that failed. llama.cpp is native code: a crash in it
    (a fault of its build on this CPU, a file it misreads) ends in an error naming the file and
    the signal, not in the pipeline's silent death."""
    return apart(path, _check_gguf, path, model_dir, probe, ref, max_tokens, threads)


def apart(path: Path, fn: Any, *args: Any) -> Any:
    """fn(*args) in a child process of its own (spawned: no threads or native state inherited);
    its return value or its exception. A child that dies without either (a signal, an exit in
    native code) is a RuntimeError naming `path`, how it died and the runtime's CPU build."""
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn, *args), name=f"{fn.__name__} {Path(path).name}")
    child.start()
    send.close()
    try:
        outcome = receive.recv()
    except EOFError:
        outcome = None
    child.join()
    if outcome is None:
        code = child.exitcode or 0
        how = f"of {signal.Signals(-code).name}" if code < 0 else f"with exit {code}"
        raise RuntimeError(f"{path}: llama.cpp died {how} while checking it ({_cpu_build()}); "
                           f"`python -m llama_cpp.server --model {path}` runs it alone")
    ok, value = outcome
    if not ok:
        raise value
    return value


def _child(send: Any, fn: Any, *args: Any) -> None:
    try:
        send.send((True, fn(*args)))
    except InputError as e:
        send.send((False, e))
    except Exception as e:  # noqa: BLE001  (not every exception pickles: its text does)
        import traceback
        send.send((False, RuntimeError(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")))


def _cpu_build() -> str:
    """llama.cpp's CPU features as it was built (the line it prints at load)."""
    import llama_cpp
    line = llama_cpp.llama_print_system_info().decode(errors="replace").replace("CPU :", "")
    return "llama.cpp built with " + " ".join(p.strip().replace(" = 1", "") for p in line.split("|")
                                             if p.strip().endswith("= 1"))


def _check_gguf(path: Path, model_dir: Path, probe: list[dict], ref: Reference,
                max_tokens: int, threads: int | None = None) -> dict:
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    failed: list[str] = []
    seen: dict[str, Any] = {}
    reader = GGUFReader(path)
    field = reader.get_field("tokenizer.chat_template")
    template = field.contents() if field is not None else None
    conversation = PROBE_TURNS + probe
    expected: str = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    if template is None:
        failed.append("it holds no chat template (tokenizer.chat_template)")
    else:
        try:
            got = render(template, conversation, tok)
        except Exception as e:  # noqa: BLE001  (a template that does not render is the finding)
            got = f"<does not render: {e}>"
        if got != expected:
            failed.append(f"its chat template renders the probe conversation as {got!r}, "
                          f"the model's as {expected!r}")
    seen["chat_template"] = template is not None and not failed

    try:
        llm = _load(path, threads)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"does not load back with llama.cpp: {e}", file=str(path),
                         key="quantize.gguf") from None
    want = tok(expected, add_special_tokens=False).input_ids
    got_ids = llm.tokenize(expected.encode(), add_bos=False, special=True)
    if got_ids != want:
        at = next((i for i, (a, b) in enumerate(zip(got_ids, want)) if a != b), min(len(got_ids), len(want)))
        failed.append(f"llama.cpp tokenizes the probe conversation differently from the model's "
                      f"tokenizer (first at token {at}: {got_ids[at:at + 3]} vs {want[at:at + 3]})")
    vocab = llm._model.vocab
    import llama_cpp
    ends = end_ids(model_dir, tok)
    for i, text in ends.items():
        piece = llm.detokenize([i], special=True).decode(errors="replace")
        eog = llama_cpp.llama_vocab_is_eog(vocab, i)
        if not eog or piece != text:
            failed.append(f"the model ends its turns with {text!r} (id {i}), which llama.cpp "
                          f"reads as {piece!r}, {'an' if eog else 'not an'} end-of-generation token")
    seen["end_of_turn"] = sorted(ends.values())
    for marker in ("<think>", "</think>"):
        hf = tok(marker, add_special_tokens=False).input_ids
        if len(hf) != 1:
            continue   # not one token in the model's vocabulary: nothing to keep
        ours = llm.tokenize(marker.encode(), add_bos=False, special=True)
        back = llm.detokenize(ours, special=True).decode(errors="replace")
        if ours != hf or back != marker:
            failed.append(f"{marker} is token {hf} for the model, {ours} -> {back!r} for llama.cpp")
    seen["think"] = "<think>" in tok.get_vocab()

    answer = llm.create_chat_completion(probe, max_tokens=max_tokens, temperature=0.0)
    choice = answer["choices"][0]
    stopped = choice["finish_reason"] == "stop"
    seen["probe"] = {"stopped": stopped, "tokens": answer["usage"]["completion_tokens"],
                     "same_as_unquantized": (choice["message"]["content"] or "") == ref.text}
    if ref.stopped and not stopped:
        failed.append(f"asked the probe question greedily it does not stop within {max_tokens} "
                      f"tokens (the unquantized student does): {choice['message']['content'][:200]!r}")
    if failed:
        raise InputError("the exported model lost what it must keep: " + "; ".join(failed),
                         file=str(path), key="quantize.gguf")
    return seen


def check_checkpoint(folder: Path, model_dir: Path, probe: list[dict], ref: Reference,
                     max_tokens: int) -> dict:
    """The checks for a transformers checkpoint (torchao int8/int4): same template rendering and
    end-of-turn tokens as the model, loads back, stops by itself on the probe when it does."""
    from transformers import AutoTokenizer
    failed: list[str] = []
    mine: Any = AutoTokenizer.from_pretrained(folder)
    theirs: Any = AutoTokenizer.from_pretrained(model_dir)
    conversation = PROBE_TURNS + probe
    if not mine.chat_template or mine.apply_chat_template(conversation, tokenize=False) != \
            theirs.apply_chat_template(conversation, tokenize=False):
        failed.append("its chat template is missing or renders the probe conversation differently")
    ends, model_ends = end_ids(folder, mine), end_ids(model_dir, theirs)
    if ends != model_ends:
        failed.append(f"it ends turns with {sorted(ends.values())}, the model "
                      f"with {sorted(model_ends.values())}")
    try:
        got = reference(folder, probe, max_tokens)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"does not load back with transformers: {e}", file=str(folder),
                         key="quantize.torchao") from None
    if ref.stopped and not got.stopped:
        failed.append(f"asked the probe question greedily it does not stop within {max_tokens} "
                      f"tokens (the unquantized student does): {got.text[:200]!r}")
    if failed:
        raise InputError("the quantized checkpoint lost what it must keep: " + "; ".join(failed),
                         file=str(folder), key="quantize.torchao")
    return {"chat_template": True, "end_of_turn": sorted(ends.values()),
            "think": "<think>" in mine.get_vocab(),
            "probe": {"stopped": got.stopped, "same_as_unquantized": got.text == ref.text}}


def _load(path: Path, threads: int | None):
    import os

    from llama_cpp import Llama
    return Llama(str(path), n_ctx=0, n_threads=threads or len(os.sched_getaffinity(0)),
                 verbose=False, seed=0)
