"""Recipes: every shipped recipe validates; bad input is one line naming file, key and line."""

import re
import subprocess
import sys

import pytest

from distill.config import load_recipe
from distill.errors import InputError
from distill.config import CONFIG_DIR
from distill.pipeline import recipe_path

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
