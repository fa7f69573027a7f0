"""The quantize stage's GGUF path: llama.cpp's converter and quantizer on the toy models and on a
real architecture with its real tokenizer, the checks that must fail loudly (a template or an
end-of-turn token lost in export, a model that no longer stops), and the file served by llama.cpp's
server answering the toy benchmark."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import InputError
from distill.quantize import checks, gguf
from distill.quantize.convert import converter_dir, qwen2_split

TOKENIZERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizers"
PROBE = [{"role": "user", "content": "What is 12+34?"}]


def test_generation_markers_go_and_the_rendering_stays():
    from transformers import AutoTokenizer

    from distill.models import resolve_model
    tok = AutoTokenizer.from_pretrained(resolve_model("toy:teacher"))
    plain = gguf.without_generation_tags(tok.chat_template)
    assert "{% generation %}" in tok.chat_template and "{% endgeneration %}" in tok.chat_template
    assert "generation %}" not in plain
    conversation = checks.PROBE_TURNS + PROBE
    assert checks.render(plain, conversation, tok) == \
        tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def test_files_are_named_as_the_ecosystem_names_them():
    assert gguf.gguf_name("r1-distill-7b", "q4_k_m") == "r1-distill-7b-Q4_K_M.gguf"
    assert gguf.gguf_name("r1-distill-7b", "q8_0") == "r1-distill-7b-Q8_0.gguf"


def test_qwen2_pre_tokenizer_is_recognised(tmp_path):
    from distill.toy.tokenizer import build_tokenizer
    build_tokenizer().save_pretrained(tmp_path)
    assert qwen2_split(tmp_path)                       # the toy world's
    assert qwen2_split(TOKENIZERS / "Qwen2.5-Math-7B")  # the real one
    assert not qwen2_split(TOKENIZERS / "DeepSeek-R1")  # another split regex
    assert not qwen2_split(tmp_path / "missing")


def test_a_missing_converter_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_LLAMA_CPP", str(tmp_path))
    with pytest.raises(InputError, match="llama.cpp's converter is not at .*convert_hf_to_gguf.py"):
        converter_dir()


def test_an_unknown_quantization_type_is_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "distill.cli", "quantize", "smoke", "--run-dir",
                        str(tmp_path), "-o", "quantize.gguf=[q3_xx]"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "quantize.gguf" in r.stderr and "q3_xx" in r.stderr and "q4_k_m" in r.stderr


def _segfault(path):
    import os
    import signal
    os.kill(os.getpid(), signal.SIGSEGV)


def _bad_file(path):
    raise InputError("not a GGUF", file=str(path), key="quantize.gguf")


def test_a_runtime_that_crashes_is_an_error_naming_the_file_not_a_silent_death(tmp_path):
    """llama.cpp is native code: the checks run apart, and a child killed by a signal is an
    error naming the file and the signal (the pipeline goes on to report it)."""
    path = tmp_path / "m-Q8_0.gguf"
    with pytest.raises(RuntimeError, match=r"m-Q8_0.gguf: llama.cpp died of SIGSEGV while checking it "
                                           r"\(llama.cpp built with .*AVX"):
        checks.apart(path, _segfault, path)
    with pytest.raises(InputError) as e:                     # the child's own errors come back whole
        checks.apart(path, _bad_file, path)
    assert e.value.file == str(path) and e.value.key == "quantize.gguf"
    assert checks.apart(path, len, "four") == 4


def test_a_kept_16_bit_file_survives_an_export_of_other_types(tmp_path, monkeypatch):
    """A re-run exports only what it lacks; the 16-bit intermediate of that export must not
    overwrite or delete the F16 variant a previous run kept under the same name."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"dtype": "float32"}))
    kept = tmp_path / "out" / "m-F16.gguf"
    kept.parent.mkdir()
    kept.write_bytes(b"kept")
    monkeypatch.setattr(gguf, "convert", lambda src, out, log, name=None: out.write_bytes(b"new16") or 1.0)
    monkeypatch.setattr(gguf, "quantize", lambda base, out, qtype, threads=None: out.write_bytes(b"q") or 1.0)
    made = gguf.export(model, kept.parent, "m", ["q8_0"])
    assert [m["path"].name for m in made] == ["m-Q8_0.gguf"]
    assert kept.read_bytes() == b"kept"
    assert sorted(p.name for p in kept.parent.iterdir()) == ["m-F16.gguf", "m-Q8_0.gguf"]


def test_off_by_default_in_the_real_recipes():
    from distill.recipes import read_recipe
    for name in ("r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"):
        assert not read_recipe(name).quantize.enabled, name
    assert read_recipe("smoke").quantize.enabled


# --------------------------------------------------------------------------- slow: real files

@pytest.fixture(scope="module")
def teacher():
    """The toy teacher: a trained model that answers the probe and stops by itself."""
    from distill.models import resolve_model
    return Path(resolve_model("toy:teacher"))


@pytest.fixture(scope="module")
def exported(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    made = gguf.export(teacher, out, "toy-teacher", ["q8_0", "q4_k_m"], threads=2)
    return {m["qtype"]: m for m in made}


@pytest.fixture(scope="module")
def reference(teacher):
    return checks.reference(teacher, PROBE, 128)


@pytest.mark.slow
def test_export_writes_each_type_smaller_than_the_last(exported):
    assert [p.name for p in sorted(exported["q8_0"]["path"].parent.glob("*.gguf"))] == \
        ["toy-teacher-Q4_K_M.gguf", "toy-teacher-Q8_0.gguf"]      # the 16-bit file not kept
    assert exported["q4_k_m"]["bytes"] < exported["q8_0"]["bytes"]
    from gguf import GGUFReader
    reader = GGUFReader(exported["q4_k_m"]["path"])
    assert reader.get_field("tokenizer.ggml.pre").contents() == "qwen2"
    assert reader.get_field("general.architecture").contents() == "qwen3moe"
    assert reader.get_field("general.name").contents() == "toy-teacher"   # what runtimes show


@pytest.mark.slow
def test_checks_pass_on_a_faithful_export(exported, teacher, reference):
    assert reference.stopped and "46" in reference.text
    for m in exported.values():
        seen = checks.check_gguf(m["path"], teacher, PROBE, reference, 128, threads=2)
        assert seen["chat_template"] and seen["end_of_turn"] == ["<|im_end|>"] and seen["think"]
        assert seen["probe"]["stopped"]


def _copy(model_dir: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in model_dir.iterdir():
        if f.is_file():
            (dst / f.name).symlink_to(f) if f.suffix == ".safetensors" else shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.slow
def test_a_template_broken_in_export_is_caught(teacher, reference, tmp_path):
    broken = _copy(teacher, tmp_path / "broken")
    jinja = broken / "chat_template.jinja"
    # The assistant's turn loses its end-of-turn token on the way out.
    jinja.write_text(jinja.read_text().replace("message['content'] + '<|im_end|>'", "message['content']"))
    out = tmp_path / "out"
    out.mkdir()
    path = out / "broken.gguf"
    gguf.convert(broken, path, out / "convert.log")
    with pytest.raises(InputError) as e:
        checks.check_gguf(path, teacher, PROBE, reference, 128, threads=2)
    assert "its chat template renders the probe conversation as" in str(e.value)
    assert str(path) in str(e.value) and "quantize.gguf" in str(e.value)


@pytest.mark.slow
def test_an_end_token_the_file_does_not_stop_at_is_caught(exported, teacher, reference, tmp_path):
    # The model stops at one more token than the file knows as an end of generation.
    model = _copy(teacher, tmp_path / "model")
    config = json.loads((model / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], 40]
    (model / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="which llama.cpp reads as .*not an end-of-generation"):
        checks.check_gguf(exported["q8_0"]["path"], model, PROBE, reference, 128, threads=2)


@pytest.mark.slow
def test_a_model_that_no_longer_stops_is_caught(tmp_path):
    from distill.models import resolve_model
    untrained = Path(resolve_model("toy:student"))       # writes newlines until the cap
    made = gguf.export(untrained, tmp_path, "untrained", ["q8_0"], threads=2)
    with pytest.raises(InputError, match="does not stop within 32 tokens"):
        checks.check_gguf(made[0]["path"], untrained, PROBE, checks.Reference("46", True), 32)


@pytest.mark.slow
def test_served_by_llama_cpp_it_answers_the_toy_benchmark(exported, tmp_path):
    import httpx

    from distill.grading.benchmarks import get_benchmark
    from distill.serving.llama_cpp import serve_gguf
    problems = get_benchmark("toy_arith").problems(None, 20)
    right = 0
    with serve_gguf(exported["q4_k_m"]["path"], "toy-teacher-Q4_K_M", tmp_path / "server.log",
                    n_ctx=512, threads=2) as (url, name):
        for p in problems:
            r = httpx.post(f"{url}/chat/completions", timeout=60, json={
                "model": name, "messages": p["messages"], "temperature": 0, "max_tokens": 120})
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "stop"
            right += f"\\boxed{{{p['answer']}}}" in choice["message"]["content"]
    assert right >= 15, right   # the unquantized teacher: 93% of toy_arith


@pytest.mark.slow
def test_served_by_llama_cpp_it_samples_as_the_other_servers(teacher, tmp_path):
    """Greedy, an F16 file served by llama.cpp writes what transformers writes from the same
    weights once a request carries SAMPLE_AS_VLLM; with the server's own defaults (repeat
    penalty 1.1) digit-by-digit sums go astray where a digit repeats."""
    import httpx
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.grading.benchmarks import get_benchmark
    from distill.serving.llama_cpp import SAMPLE_AS_VLLM, serve_gguf
    [made] = gguf.export(teacher, tmp_path, "teacher", ["f16"], threads=2)
    problems = get_benchmark("toy_arith").problems(None, 40)
    tok = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    expected = []
    for p in problems:
        ids = tok.apply_chat_template(p["messages"], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=120, do_sample=False)
        expected.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    same = {}
    with serve_gguf(made["path"], "teacher-F16", tmp_path / "server.log", n_ctx=512,
                    threads=2) as (url, name):
        for how, fields in (("as vllm", SAMPLE_AS_VLLM), ("defaults", {})):
            same[how] = 0
            for p, text in zip(problems, expected):
                r = httpx.post(f"{url}/chat/completions", timeout=60, json={
                    "model": name, "messages": p["messages"], "temperature": 0,
                    "max_tokens": 120, **fields})
                message = r.json()["choices"][0]["message"]
                got = (message.get("reasoning_content") or "") + message["content"]
                same[how] += "".join(got.split()) == "".join(text.split())
    assert same["as vllm"] >= 38 and same["defaults"] < same["as vllm"], same


@pytest.mark.slow
def test_a_real_architecture_with_its_real_tokenizer_exports_and_passes(tmp_path):
    """A rehearsal-size Qwen2.5-Math-7B (its config, its 151,936-token vocabulary and chat
    template, random weights): converter and checks on the real tokenizer. Random weights do not
    stop by themselves, so the probe's stop is not required (the unquantized one does not stop)."""
    from distill.rehearse.models import build_tiny
    model = build_tiny("Qwen/Qwen2.5-Math-7B", str(TOKENIZERS / "Qwen2.5-Math-7B"),
                       out=tmp_path / "model")
    made = gguf.export(model, tmp_path / "gguf", "qwen2.5-math-7b-tiny", ["q8_0", "q4_k_m"],
                       threads=2)
    ref = checks.reference(model, PROBE, 8)
    assert not ref.stopped
    for m in made:
        seen = checks.check_gguf(m["path"], model, PROBE, ref, 8, threads=2)
        # A base Qwen: EOS <|endoftext|>, turns end with <|im_end|>: both stop llama.cpp.
        assert seen["end_of_turn"] == ["<|endoftext|>", "<|im_end|>"], seen
        assert not seen["think"]


def test_a_quantized_row_counts_loops_and_keeps_retention_against_the_unquantized():
    """Scores of a variant: the share of its answers caught in a repetition loop, and its pass@1
    over the unquantized student's on the same questions, beside retention of the teacher's."""
    from distill.eval import scoring
    from distill.grading.benchmarks import get_benchmark
    bench = get_benchmark("toy_arith")
    problems = bench.problems(None, 4)

    def samples(correct: list[bool], loops: int = 0) -> list[dict]:
        return [{"task_id": p["id"], "sample": 0, "correct": ok, "answer": None, "finish_reason":
                 "length" if i < loops else "stop",
                 "content": ("Wait, 2+2=4. " * 40) if i < loops else "\\boxed{4}"}
                for i, (p, ok) in enumerate(zip(problems, correct))]
    table = {("teacher", bench.name): [True] * 4, ("student", bench.name): [True, True, True, False],
             ("student-q4_k_m", bench.name): [False, True, True, False]}
    qs = {k: scoring.questions_from(bench, problems, samples(v, 1 if k[0] == "student-q4_k_m" else 0))
          for k, v in table.items()}
    rows = [r for (role, _), q in qs.items() for r in scoring.score_rows(role, role, bench, q)]
    scoring.add_retention(rows, qs)
    q4 = next(r for r in rows if r["role"] == "student-q4_k_m" and r["category"] == "reasoning")
    assert q4["score"] == pytest.approx(0.5) and q4["retention"] == pytest.approx(0.5)
    assert q4["retention_student"] == pytest.approx(2 / 3)
    assert q4["repetitive"] == pytest.approx(0.25) and q4["truncated"] == pytest.approx(0.25)
    student = next(r for r in rows if r["role"] == "student" and r["category"] == "reasoning")
    assert student["repetitive"] == 0 and "retention_student" not in student


def test_a_missing_runtime_is_named_before_anything_runs(monkeypatch, tmp_path):
    import importlib.util

    from distill.quantize.stage import run_quantize
    from distill.recipes import read_recipe
    from distill.records import Stage
    Stage(tmp_path, "train").complete(model="train/model")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(InputError, match="quantize.gguf: llama_cpp is not installed: install the quantize extra"):
        run_quantize(read_recipe("smoke"), tmp_path)
    assert not Stage(tmp_path, "quantize").is_complete()
