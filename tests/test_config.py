"""Recipes: every shipped recipe validates; bad input is one line naming file, key and line."""

import re
import subprocess
import sys

import pytest

from distill.config import load_recipe
from distill.errors import InputError
from distill.config import CONFIG_DIR
from distill.config import recipe_path

RECIPES = sorted(CONFIG_DIR.glob("*.yaml"))


def test_all_recipes_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"smoke", "r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates(path):
    cfg = load_recipe(path)
    assert cfg.run.name == path.stem
    assert path.read_text().startswith("#"), "a recipe opens with a comment: purpose and command"
    from distill.grading.benchmarks import list_benchmarks
    assert set(cfg.eval.benchmarks) <= set(list_benchmarks())


@pytest.mark.parametrize("name", ["r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"])
def test_real_recipes_sample_like_the_r1_paper(name):
    cfg = load_recipe(recipe_path(name))
    assert (cfg.generate.temperature, cfg.generate.top_p) == (0.6, 0.95)
    assert cfg.generate.max_tokens >= 32768
    assert not cfg.teacher.model.startswith("toy:") and not cfg.train.student.startswith("toy:")


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


SMOKE = (CONFIG_DIR / "smoke.yaml").read_text()


def test_unknown_key_names_file_key_and_line(tmp_path):
    p = _write(tmp_path, SMOKE.replace("  learning_rate:", "  learning_rat:"))
    line = next(i for i, l in enumerate(p.read_text().splitlines(), 1) if "learning_rat:" in l)
    with pytest.raises(InputError) as e:
        load_recipe(p)
    assert str(e.value) == f"{p}:{line}: train.learning_rat: unknown key"


def test_wrong_type_names_key_and_line(tmp_path):
    p = _write(tmp_path, re.sub(r"(?m)^  epochs: .*$", "  epochs: three", SMOKE))
    line = next(i for i, l in enumerate(p.read_text().splitlines(), 1) if "epochs: three" in l)
    with pytest.raises(InputError) as e:
        load_recipe(p)
    assert str(e.value).startswith(f"{p}:{line}: train.epochs: ")


def test_missing_section_and_missing_file(tmp_path):
    p = _write(tmp_path, "run: {name: x}\n")
    with pytest.raises(InputError, match=r"prompts: Field required"):
        load_recipe(p)
    with pytest.raises(InputError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_malformed_yaml_names_line(tmp_path):
    p = _write(tmp_path, "run:\n  name: x\n  seed: [1, 2\nteacher: {}\n")
    with pytest.raises(InputError) as e:
        load_recipe(p)
    assert str(e.value).startswith(f"{p}:") and "malformed YAML" in str(e.value)
    assert e.value.line in (4, 5)


def test_overrides_apply_and_are_validated():
    cfg = load_recipe(recipe_path("smoke"), ["train.learning_rate=1e-4", "prompts.sources.0.count=7"])
    assert cfg.train.learning_rate == 1e-4 and cfg.prompts.sources[0].count == 7
    with pytest.raises(InputError, match=r"train\.epochs: .*from -o"):
        load_recipe(recipe_path("smoke"), ["train.epochs=abc"])
    with pytest.raises(InputError, match=r"train\.nope: unknown key"):
        load_recipe(recipe_path("smoke"), ["train.nope=1"])


def test_generation_hash_follows_sampling_not_plumbing():
    a = load_recipe(recipe_path("smoke"))
    assert a.generation_hash() != load_recipe(recipe_path("smoke"), ["generate.temperature=0.3"]).generation_hash()
    assert a.generation_hash() != load_recipe(recipe_path("smoke"), ["teacher.model=other"]).generation_hash()
    same = load_recipe(recipe_path("smoke"), ["generate.max_concurrency=3", "generate.timeout_s=5",
                                              "generate.samples_per_prompt=9"])
    assert a.generation_hash() == same.generation_hash()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    p = _write(tmp_path, SMOKE.replace("  learning_rate:", "  learning_rat:"))
    r = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(p), "--run-dir",
                        str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.learning_rat: unknown key" in lines[0]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- names a recipe can misspell

def _line_of(path, text):
    return next(i for i, l in enumerate(path.read_text().splitlines(), 1) if text in l)


def test_a_misspelt_benchmark_is_rejected_at_load_naming_key_line_and_choices(tmp_path):
    p = _write(tmp_path, SMOKE.replace("benchmarks: [toy_arith, toy_code, toy_mult]",
                                       "benchmarks: [toy_arith, toy_cod, toy_mult]"))
    with pytest.raises(InputError) as e:
        load_recipe(p)
    assert str(e.value).startswith(f"{p}:{_line_of(p, 'toy_cod, ')}: eval.benchmarks.1: unknown "
                                   "benchmark 'toy_cod' (did you mean 'toy_code'?); choose from: ")
    assert "humaneval_plus" in str(e.value)


def test_a_misspelt_decontamination_target_is_rejected_at_load(tmp_path):
    p = _write(tmp_path, SMOKE.replace("filter:\n",
                                       "filter:\n  decontaminate: [gsm8k, humaneval_pluss]\n", 1))
    with pytest.raises(InputError) as e:
        load_recipe(p)
    assert str(e.value).startswith(
        f"{p}:{_line_of(p, 'humaneval_pluss')}: filter.decontaminate.1: unknown benchmark "
        "'humaneval_pluss' (did you mean 'humaneval_plus'?); choose from: ")
    with pytest.raises(InputError, match=r"filter\.decontaminate: unknown value 'al' \(did you "
                                         r"mean 'all'\?\); choose from: all, none"):
        load_recipe(recipe_path("smoke"), ["filter.decontaminate=al"])
    with pytest.raises(InputError, match=r"filter\.decontaminate: .*write \[gsm8k\]"):
        load_recipe(recipe_path("smoke"), ["filter.decontaminate=gsm8k"])
    for ok in ("all", "none", "[gsm8k, toy_code]"):
        load_recipe(recipe_path("smoke"), [f"filter.decontaminate={ok}"])


def test_a_bad_train_method_names_the_value_and_the_methods(tmp_path):
    p = _write(tmp_path, SMOKE.replace("  method: sft ", "  method: distil ", 1))
    with pytest.raises(InputError) as e:
        load_recipe(p)
    assert str(e.value) == (f"{p}:{_line_of(p, 'method: distil')}: train.method: unknown value "
                            "'distil'; choose from: sft, logit_kd, on_policy, gold")


@pytest.mark.parametrize("override, message", [
    ("eval.benchmark={toy_arih: {samples: 2}}",
     "eval.benchmark.toy_arih: unknown benchmark 'toy_arih' (did you mean 'toy_arith'?)"),
    ("eval.benchmark={gsm8k: {samples: 2}}",
     "eval.benchmark.gsm8k: settings for 'gsm8k', which is not in eval.benchmarks"),
    ("eval.data_files={gsm8: x.jsonl}",
     "eval.data_files.gsm8: unknown benchmark 'gsm8' (did you mean 'gsm8k'?)"),
    ("prompts.sources.0.family=arth",
     "prompts.sources.0.family: unknown toy family 'arth' (did you mean 'arith'?)"),
    ("prompts.sources.0.kind=hub",
     "prompts.sources.0.kind: unknown value 'hub'; choose from: toy, hf, jsonl"),
    ("teacher.model=toy:teachr", "teacher.model: unknown toy model 'toy:teachr'"),
    ("teacher.backend=vllm-serve",
     "teacher.backend: unknown value 'vllm-serve' (did you mean 'vllm_serve'?)"),
    ("train.student=toy:studnet",
     "train.student: unknown toy model 'toy:studnet' (did you mean 'toy:student'?)"),
    ("train.lr_scheduler=cosin",
     "train.lr_scheduler: unknown scheduler 'cosin' (did you mean 'cosine'?)"),
    ("train.rope_scaling={rope_type: yarm, factor: 4}",
     "train.rope_scaling.rope_type: unknown RoPE type 'yarm' (did you mean 'yarn'?)"),
    ("eval.server=vlm",
     "eval.server: unknown value 'vlm' (did you mean 'vllm'?); choose from: distill, vllm"),
])
def test_every_name_is_checked_at_load(override, message):
    with pytest.raises(InputError) as e:
        load_recipe(recipe_path("smoke"), [override])
    assert message in str(e.value) and str(e.value).endswith("=...)")   # (from -o key=...)


def test_the_name_lists_match_their_registries():
    import inspect

    from distill import config
    from distill.grading.benchmarks import list_benchmarks
    from distill.toy import arch, models, tasks
    assert config.benchmark_names() == list_benchmarks()
    assert set(config.TOY_FAMILIES) == set(tasks.CATEGORIES)
    assert set(config.TOY_MODELS) == {"toy:teacher", "toy:teacher-bpe"} | \
        {f"toy:{name}" for name in arch.STUDENTS}
    assert '"toy:teacher"' in inspect.getsource(models.resolve_model)
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.trainer_utils import SchedulerType
    assert set(config.LR_SCHEDULERS) == {s.value for s in SchedulerType}
    assert set(config.ROPE_TYPES) == set(ROPE_INIT_FUNCTIONS) | {"default"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "distill.cli", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("old, new, key", [
    ("benchmarks: [toy_arith, toy_code, toy_mult]", "benchmarks: [toy_arith, toy_cod, toy_mult]", "eval.benchmarks.1"),
    ("filter:\n", "filter:\n  decontaminate: [humaneval_pluss]\n", "filter.decontaminate.0"),
    ("  method: sft ", "  method: distil ", "train.method"),
])
def test_distill_run_rejects_a_misspelt_name_before_any_stage(tmp_path, old, new, key):
    assert old in SMOKE
    p = _write(tmp_path, SMOKE.replace(old, new, 1))
    r = _cli("run", p, "--run-dir", tmp_path / "run")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{p}:" in lines[0] and f" {key}: unknown " in lines[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_benchmark_options_are_checked_when_the_recipe_is_read(tmp_path):
    r = _cli("validate", "smoke", "-o", "eval.benchmark={toy_arith: {options: {release: v1}}}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "eval.benchmark.toy_arith.options: unknown option 'release' for benchmark toy_arith" \
        in r.stderr


def test_a_missing_recipe_is_one_line_and_exit_2(tmp_path):
    r = _cli("run", tmp_path / "nope.yaml")
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: recipe file not found"
