"""A sweep's plan: the variants of one recipe, their run directories, and the stages they share.

    plan = plan_sweep("smoke", ["train.max_examples=250,500,1000", "train.student=toy:student,toy:student-l"],
                      Path("runs/smoke-sweep"))

One variant per combination of the swept values (a grid), each a normal run directory
`<sweep_dir>/variants/<slug>/` with its own recipe.yaml. A swept key first matters to one stage
(`train.*` to train, `teacher.*` to generate, ...; `first_stage`); variants whose values agree
on every key that matters up to a stage share that stage: it runs once, in the first such
variant (its lead), and the others' folders of that stage are links to the lead's. So two
teachers share the prompts, a filter switched off shares prompts and generate, a data-size or
student axis shares everything up to train.

Evaluation: the teacher's and the base student's answers depend on the teacher, the student and
the eval settings only; a variant's evaluate starts from the answers its donor (the first
variant that agrees on those) already has, and asks only for the rest.

`sweep.json` in the sweep directory records the plan; a later run of the same sweep directory
with more values adds variants and reuses everything finished.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.config import Recipe, dump_recipe
from distill.errors import InputError
from distill.records import STAGE_FOLDERS, write_json, write_text
from distill.recipes import read_recipe

STAGE_ORDER = list(STAGE_FOLDERS)          # prompts, generate, filter, train, quantize, evaluate, publish
SHARED_UPSTREAM = ("prompts", "generate", "filter")

# The first stage a recipe section matters to.
SECTION_STAGE = {"run": "prompts", "prompts": "prompts", "teacher": "generate",
                 "generate": "generate", "filter": "filter", "train": "train",
                 "quantize": "quantize",
                 "eval": "evaluate", "plan": "publish", "publish": "publish",
                 "refresh": "publish"}
# Keys that matter earlier than their section: the prompts stage drops prompts found in the
# benchmarks that filter.decontaminate names (and eval.data_files supplies).
EARLIER = {"filter.decontaminate": "prompts", "eval.benchmarks": "prompts",
           "eval.data_files": "prompts"}
# Keys of the train section that change what the base student answers (evaluate serves the
# base as the recipe names and templates it); the other train keys change only the student.
BASE_KEYS = ("train.student", "train.revision", "train.chat_template", "train.end_of_turn_token",
             "train.pad_token", "train.max_position_embeddings", "train.rope_scaling")


def first_stage(key: str) -> str:
    for prefix, stage in EARLIER.items():
        if key == prefix or key.startswith(prefix + "."):
            return stage
    section = key.split(".", 1)[0]
    if section == "sweep":
        raise InputError("the sweep's own settings are not a variant's", key=key)
    if section not in SECTION_STAGE:
        raise InputError(f"no recipe section {section!r}", key=key)
    return SECTION_STAGE[section]


def _split_values(raw: str) -> list[str]:
    """`a,b,[c,d],{e: 1, f: 2}` -> the four values: commas inside brackets or quotes stay."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return out


def parse_over(specs: list[str]) -> dict[str, list[Any]]:
    """`--over KEY=V1,V2` options -> {key: [values]}; each value is read as YAML (as `-o` does)."""
    over: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise InputError(f"--over {spec!r} must look like key.path=value1,value2", key=spec)
        if key in over:
            raise InputError("swept twice: give its values in one --over", key=key)
        values = []
        for text in _split_values(raw):
            try:
                values.append(yaml.safe_load(text) if text else "")
            except yaml.YAMLError:
                values.append(text)
        over[key] = values
    return over


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _slug(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        text = re.sub(r"[^A-Za-z0-9.+-]+", "-", _text(value)).strip("-") or "empty"
        parts.append(f"{key.rsplit('.', 1)[-1]}-{text}")
    return "_".join(parts) or "base"


@dataclass
class Variant:
    name: str                              # "train.student=toy:student,train.max_examples=500"
    values: dict[str, Any]                 # swept key -> value
    run_dir: Path
    overrides: list[str]                   # what `distill -o` would be given for it
    cfg: Recipe
    shares: dict[str, str] = field(default_factory=dict)  # stage -> the variant that runs it
    donor: str = ""                        # the variant whose teacher/base answers it reuses

    @property
    def recipe_file(self) -> Path:
        return self.run_dir / "recipe.yaml"

    def runs(self, stage: str) -> bool:
        """Whether this variant runs `stage` itself (it leads the stage's group)."""
        return self.shares[stage] == self.name


@dataclass
class SweepPlan:
    sweep_dir: Path
    recipe: str
    overrides: list[str]
    over: dict[str, list[Any]]
    reference: str
    variants: list[Variant]
    concurrency: int = 1
    threads_per_variant: int | None = None
    task_runner: str = "threads"
    ray_address: str | None = None

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def leads(self, stage: str) -> list[Variant]:
        return [v for v in self.variants if v.runs(stage)]


def variant_name(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={_text(v)}" for k, v in values.items()) or "base"


def _share_key(values: dict[str, Any], stage: str) -> str:
    upto = STAGE_ORDER.index(stage)
    return json.dumps({k: v for k, v in values.items()
                       if STAGE_ORDER.index(first_stage(k)) <= upto}, sort_keys=True)


def _donor_key(values: dict[str, Any]) -> str:
    """What the teacher's and the base's answers depend on among the swept keys."""
    keep = {k: v for k, v in values.items()
            if first_stage(k) in ("evaluate", "publish") or k.split(".")[0] in ("run", "teacher")
            or any(k == b or k.startswith(b + ".") for b in BASE_KEYS)}
    return json.dumps(keep, sort_keys=True)


def plan_sweep(recipe: str, over_specs: list[str], sweep_dir: Path,
               overrides: list[str] | None = None, reference: str | None = None) -> SweepPlan:
    """Every variant's recipe read and checked now (a bad key or value is bad input naming the
    `--over` it came from), before any stage runs."""
    overrides = list(overrides or [])
    base = read_recipe(recipe, overrides)
    over = dict(base.sweep.over)
    for key, given in parse_over(over_specs).items():
        over[key] = given             # the command line wins over the recipe's sweep.over
    if not over:
        raise InputError("nothing to sweep over: give --over KEY=V1,V2 (or sweep.over in the recipe)",
                         key="sweep.over")
    for key in over:
        first_stage(key)
    variants: list[Variant] = []
    slugs: set[str] = set()
    for combo in itertools.product(*over.values()):
        values = dict(zip(over, combo))
        extra = [f"{k}={_text(v)}" for k, v in values.items()]
        try:
            cfg = read_recipe(recipe, overrides + extra)
        except InputError as e:
            raise InputError(f"variant {variant_name(values)}: {e.message}", file=e.file,
                             key=e.key, line=e.line) from None
        slug = _slug(values)
        if slug in slugs:
            raise InputError(f"two variants would share the folder {slug!r}", key="--over")
        slugs.add(slug)
        variants.append(Variant(variant_name(values), values, sweep_dir / "variants" / slug,
                                overrides + extra, cfg))
    for stage in STAGE_ORDER:
        lead_of: dict[str, str] = {}
        for v in variants:
            v.shares[stage] = lead_of.setdefault(_share_key(v.values, stage), v.name)
    donors: dict[str, str] = {}
    for v in variants:
        v.donor = donors.setdefault(_donor_key(v.values), v.name)
    ref = reference or base.sweep.reference or variants[0].name
    if ref not in {v.name for v in variants}:
        matches = [v.name for v in variants if set(ref.split(",")) <= set(v.name.split(","))]
        if len(matches) != 1:
            raise InputError(f"no variant {ref!r} to compare against"
                             + (f" ({len(matches)} match it)" if matches else "")
                             + "; the variants: " + "; ".join(v.name for v in variants),
                             key="sweep.reference")
        ref = matches[0]
    s = base.sweep
    return SweepPlan(sweep_dir, recipe, overrides, over, ref, variants, s.concurrency,
                     s.threads_per_variant, s.task_runner, s.ray_address)


def prepare(plan: SweepPlan) -> None:
    """The variants' run directories: their recipe.yaml, and links to the folders of the stages
    they share (`<folder> -> ../<lead>/<folder>`). A folder a variant already holds as its own
    where the plan shares it: bad input (the sweep directory was made by another plan)."""
    for v in plan.variants:
        v.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(v.recipe_file, dump_recipe(v.cfg))
        for stage, lead_name in v.shares.items():
            if lead_name == v.name:
                continue
            lead = plan.variant(lead_name)
            for folder in STAGE_FOLDERS[stage]:
                link, target = v.run_dir / folder, Path("..") / lead.run_dir.name / folder
                if link.is_symlink() and Path(link.readlink()) == target:
                    continue
                if link.exists() or link.is_symlink():
                    raise InputError(f"{folder}/ of variant {v.name} is not the link to "
                                     f"{lead.name}'s that this sweep plans (made by another "
                                     "sweep?); use another sweep directory", file=str(link))
                (lead.run_dir / folder).mkdir(parents=True, exist_ok=True)
                link.symlink_to(target, target_is_directory=True)
    write_json(plan.sweep_dir / "sweep.json", describe(plan))


def describe(plan: SweepPlan) -> dict[str, Any]:
    return {"recipe": plan.recipe, "overrides": plan.overrides, "over": plan.over,
            "reference": plan.reference, "concurrency": plan.concurrency,
            "variants": [{"name": v.name, "values": v.values,
                          "run_dir": str(v.run_dir.relative_to(plan.sweep_dir)),
                          "shares": v.shares, "donor": v.donor} for v in plan.variants]}
