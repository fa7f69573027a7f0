"""The `distill` command: one subcommand per stage, `run` for all of them, `demo` for the CPU demo.

Exit codes: 0 success, 2 bad input (one line naming file, key or line), 1 a failure during the run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from distill.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Teacher-student distillation: generate, filter, train, evaluate, publish.")

RecipeArg = typer.Argument(..., help="Recipe YAML, or a name in configs/ (smoke, r1-to-7b, ...)")
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default: runs/<recipe name>)")
OverrideOpt = typer.Option(None, "-o", "--override", help="Dotted override, e.g. train.learning_rate=1e-4")
WaitOpt = typer.Option(False, "--wait", help="When another run of a stage holds this run directory, "
                       "wait for it to end, then resume (default: refuse, exit 2)")


def _fail(e: BaseException, code: int) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(code)


@app.callback()
def main(quiet: bool = typer.Option(False, "--quiet", "-q", help="Log warnings and errors only"),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug lines too")):
    """Logs go to stderr (INFO by default: each stage's summary and progress); a command's
    result (a table, a path, JSON) goes to stdout."""
    from distill import logs
    if quiet and verbose:
        _fail(InputError("give --quiet or --verbose, not both"), 2)
    try:
        logs.setup("WARNING" if quiet else "DEBUG" if verbose else None)
    except InputError as e:   # a DISTILL_LOG_LEVEL that is not a level
        _fail(e, 2)


def _load(recipe: str, overrides: Optional[List[str]], run_dir: Optional[Path]):
    from distill.config import default_run_dir
    from distill.recipes import read_recipe
    cfg = read_recipe(recipe, overrides or [])
    return cfg, Path(run_dir) if run_dir else default_run_dir(cfg)


def _run(recipe: str, overrides, run_dir, stages: list[str] | None, wait: bool = False) -> Path:
    from distill.pipeline import run_all
    try:
        cfg, rd = _load(recipe, overrides, run_dir)
        t0 = time.time()
        run_all(cfg, rd, stages, wait=wait)
    except InputError as e:
        _fail(e, 2)
    except KeyboardInterrupt:
        _fail(RuntimeError("interrupted; re-run the same command to resume"), 130)
    except Exception as e:  # a failure during the run: say what failed, keep the traceback short
        import traceback
        traceback.print_exc(limit=-3, file=sys.stderr)
        _fail(e, 1)
    typer.echo(f"done in {time.time() - t0:.0f} s: {rd}")
    return rd


@app.command()
def run(recipe: str = RecipeArg, run_dir: Optional[Path] = RunDirOpt,
        override: Optional[List[str]] = OverrideOpt, wait: bool = WaitOpt):
    """Run every stage: prompts, generate, filter, train, evaluate, publish."""
    _run(recipe, override, run_dir, None, wait)


@app.command()
def demo(run_dir: Path = typer.Option(Path("runs/demo"), "--run-dir"),
         override: Optional[List[str]] = OverrideOpt):
    """The CPU demo: train a tiny MoE teacher, distil it into a tiny dense student, report."""
    from distill.records import RunDir
    rd = _run("smoke", override, run_dir, None)
    report = RunDir(rd).report
    typer.echo(f"report: {report}/leaderboard.md (also .csv, .html, retention.png, training.png, "
               "README.md, economics.md, quality_vs_cost.png, dataset_card.md)")
    md = report / "leaderboard.md"
    if md.exists():  # the per-benchmark rows; per-subcategory rows are in the files
        for line in md.read_text().splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) < 6 or "/" not in cells[4]:
                typer.echo(line)
    econ = report / "economics.md"
    if econ.exists():  # teacher against students: memory, FLOPs, $ per M tokens, retention
        section = econ.read_text().split("## Teacher and students", 1)[-1].split("\n## ", 1)[0]
        typer.echo("\nEconomics (report/economics.md):" + section.rstrip())


def _stage_names(text: str) -> list[str]:
    from distill.records import STAGE_FOLDERS
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGE_FOLDERS]
    if unknown or not names:
        raise InputError(f"unknown stage(s) {', '.join(map(repr, unknown))}; the stages are "
                         + ", ".join(STAGE_FOLDERS), key="--stages")
    return names


@app.command()
def sweep(recipe: str = RecipeArg,
          over: Optional[List[str]] = typer.Option(
              None, "--over", help="KEY=V1,V2,...: a variant per value (several --over make a "
              "grid), e.g. train.max_examples=250,500,1000; adds to the recipe's sweep.over"),
          run_dir: Optional[Path] = typer.Option(
              None, "--run-dir", help="The sweep directory (default runs/<recipe name>-sweep); "
              "each variant is a run directory under variants/"),
          stages: Optional[str] = typer.Option(
              None, "--stages", help="Only these stages, comma-separated, e.g. "
              "prompts,generate,filter (the shared part) then train,evaluate,publish"),
          override: Optional[List[str]] = OverrideOpt):
    """Run variants of a recipe and map where the student keeps the teacher's quality.

    Variants share the stages their values leave equal (one prompts/generate/filter for a
    data-size or student axis); train, evaluate and publish run per variant,
    sweep.concurrency at once. Writes <sweep dir>/report/map.md (.csv, .json, plots)."""
    from distill.config import default_run_dir
    from distill.sweep.plan import plan_sweep
    from distill.sweep.run import run_sweep
    try:
        cfg, _ = _load(recipe, override, None)
        sweep_dir = Path(run_dir) if run_dir else Path(f"{default_run_dir(cfg)}-sweep")
        t0 = time.time()
        chosen = _stage_names(stages) if stages else None
        path = run_sweep(plan_sweep(recipe, list(over or []), sweep_dir, list(override or [])),
                         chosen)
    except InputError as e:
        _fail(e, 2)
    except KeyboardInterrupt:
        _fail(RuntimeError("interrupted; re-run the same command to resume"), 130)
    except Exception as e:  # a step that failed: named, with its log
        _fail(e, 1)
    typer.echo(f"done in {time.time() - t0:.0f} s: {path}")


def _stage_command(name: str, doc: str) -> None:
    def command(recipe: str = RecipeArg, run_dir: Optional[Path] = RunDirOpt,
                override: Optional[List[str]] = OverrideOpt, wait: bool = WaitOpt):
        _run(recipe, override, run_dir, [name], wait)
    command.__doc__ = doc
    app.command(name=name)(command)


_stage_command("prompts", "Collect prompts from the recipe's sources.")
_stage_command("generate", "Ask the teacher for traces (resumable).")


@app.command(name="filter")
def filter_(recipe: str = RecipeArg, run_dir: Optional[Path] = RunDirOpt,
            override: Optional[List[str]] = OverrideOpt, wait: bool = WaitOpt,
            input: Optional[str] = typer.Option(
                None, "--input", help="Filter these traces instead of the generate stage's: a "
                "JSONL / JSON / Parquet file or a Hub dataset of chat `messages` with gold "
                "answers or tests (same as -o filter.input=...)")):
    """Verify, check, decontaminate and deduplicate the traces; write the training set."""
    import json
    extra = [f"filter.input={json.dumps(input)}"] if input else []
    _run(recipe, list(override or []) + extra, run_dir, ["filter"], wait)


_stage_command("train", "Train the student: SFT, logit KD, on-policy or cross-tokenizer (GOLD) distillation; full or LoRA/QLoRA.")
_stage_command("quantize", "Quantize the student for the edge (GGUF, int8/int4) and check what the export keeps.")
_stage_command("evaluate", "Score teacher, base student, distilled student and its quantized variants.")
_stage_command("publish", "Write the leaderboard, plots, model and dataset cards; push to the Hub.")


@app.command()
def refresh(recipe: str = RecipeArg, run_dir: Optional[Path] = RunDirOpt,
            override: Optional[List[str]] = OverrideOpt, wait: bool = WaitOpt):
    """Add new prompts, generate only for them, re-filter; retrain past the recipe's threshold."""
    from distill.refresh import run_refresh
    try:
        cfg, rd = _load(recipe, override, run_dir)
        summary = run_refresh(cfg, rd, wait=wait)
    except InputError as e:
        _fail(e, 2)
    except Exception as e:
        import traceback
        traceback.print_exc(limit=-3, file=sys.stderr)
        _fail(e, 1)
    typer.echo(f"refresh: {summary['new_prompts']} new prompts, {summary['new_samples']} new "
               f"samples, kept {summary['kept_before']} -> {summary['kept_after']}; "
               f"{'retrained' if summary['retrained'] else 'not retrained'}: {summary['reason']}")


@app.command()
def leaderboard(run_dirs: List[Path] = typer.Argument(..., help="Run directories to compare"),
                out: Path = typer.Option(Path("leaderboard"), "--out", help="Output folder"),
                title: str = typer.Option("Leaderboard", "--title")):
    """One table across runs (Markdown, CSV, sortable HTML) and plots as PNG."""
    from distill.publish.board import write_leaderboard
    try:
        written = write_leaderboard(run_dirs, out, title)
    except InputError as e:
        _fail(e, 2)
    typer.echo(f"leaderboard of {len(run_dirs)} runs: " + ", ".join(str(p) for p in written))


@app.command()
def view(run_dirs: List[Path] = typer.Argument(..., help="Run directories to look at"),
         port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0: a free one)"),
         host: str = typer.Option("127.0.0.1", "--host")):
    """A local page over the runs' traces, verdicts and flipped eval questions (offline)."""
    from distill.view.server import make_server
    try:
        server = make_server(run_dirs, host, port)
    except InputError as e:
        _fail(e, 2)
    typer.echo(f"viewing {', '.join(map(str, run_dirs))} at http://{host}:{server.server_address[1]}/ "
               "(Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def validate(recipe: str = RecipeArg, override: Optional[List[str]] = OverrideOpt):
    """Check a recipe and print it resolved."""
    from distill.config import dump_recipe
    try:
        cfg, _ = _load(recipe, override, None)
    except InputError as e:
        _fail(e, 2)
    typer.echo(dump_recipe(cfg))


@app.command()
def plan(recipe: Optional[str] = typer.Argument(None, help="Recipe YAML or name (optional with --teacher-config)"),
         teacher_config: Optional[str] = typer.Option(None, "--teacher-config", help="The teacher's config.json (a file, a model directory or a Hub id)"),
         student_config: Optional[str] = typer.Option(None, "--student-config", help="The student's config.json"),
         run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="A run of the recipe: its measured usage goes beside the projection (default: runs/<recipe name> when it exists)"),
         override: Optional[List[str]] = OverrideOpt,
         as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON")):
    """Size and price a recipe: parameters (total and active), memory, GPUs and vLLM flags, FLOPs, cost."""
    import json

    from distill.plan import format_plan, make_plan
    from distill.config import default_run_dir
    try:
        if recipe is None and teacher_config is None:
            raise InputError("give a recipe or --teacher-config")
        cfg = _load(recipe, override, None)[0] if recipe else None
        rd = run_dir if run_dir else (default_run_dir(cfg) if cfg and default_run_dir(cfg).is_dir() else None)
        result = make_plan(cfg, rd, teacher_config=teacher_config, student_config=student_config)
    except InputError as e:
        _fail(e, 2)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        title = f"{cfg.run.name} ({cfg.teacher.model} -> {cfg.train.student})" if cfg else ""
        typer.echo(format_plan(result, title) + (f"\nRun directory: {rd}" if rd else ""))


@app.command()
def score(benchmark: str = typer.Argument(..., help="A benchmark in evals/ (humaneval_plus, math500, ...)"),
          samples: Path = typer.Option(..., "--samples", help="JSONL: task_id and completion per line"),
          data_file: Optional[Path] = typer.Option(None, "--data-file",
                                                   help="Local benchmark file instead of the Hub"),
          subset: bool = typer.Option(False, "--subset", help="Score only the tasks present"),
          workers: int = typer.Option(2, "--workers", min=1),
          k: Optional[List[int]] = typer.Option(None, "-k", help="Also report pass@k"),
          option: Optional[List[str]] = typer.Option(None, "--option",
                                                     help="Benchmark option, e.g. release=release_v5")):
    """Grade completions you already have and print the score (writes FILE.<bench>.results.json)."""
    from distill.eval.score import score_samples
    try:
        opts = {}
        for o in option or []:
            if "=" not in o:
                raise InputError(f"--option {o!r} must look like name=value", key="--option")
            name, value = o.split("=", 1)
            opts[name] = value
        rows, out = score_samples(benchmark, samples, data_file=str(data_file) if data_file else None,
                                  options=opts, subset=subset, workers=workers, pass_k=k or [])
    except InputError as e:
        _fail(e, 2)
    typer.echo(f"{'category':<40} {'metric':<8} {'score':>7}  {'95% CI':<15} {'n':>5}")
    for r in rows:
        typer.echo(f"{r['category']:<40} {r['metric']:<8} {100 * r['score']:6.1f}%  "
                   f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]".ljust(74)
                   + f" {r['n']:>5}")
    typer.echo(f"per-sample verdicts: {out}")


@app.command()
def rehearse(recipe: str = RecipeArg, run_dir: Optional[Path] = RunDirOpt,
             override: Optional[List[str]] = OverrideOpt,
             data: Optional[Path] = typer.Option(
                 None, "--data", help="Offline: a folder of data on hand (benchmark files, "
                 "schemas/) to build local copies of the recipe's Hub datasets from; default: "
                 "the Hub"),
             tokenizers: Optional[Path] = typer.Option(
                 None, "--tokenizers", help="Offline: a folder with one tokenizer folder per model "
                 "name (Qwen2.5-Math-7B/, DeepSeek-R1/, ...); default: the Hub"),
             dialect: Optional[str] = typer.Option(
                 None, "--dialect", help="The teacher stand-in's API dialect: vllm or deepseek "
                 "(default: the recipe endpoint's)")):
    """Run a recipe as written, shrunk in size, end to end on CPU with stand-ins; report marked as a rehearsal."""
    _rehearse(recipe, override, run_dir, data, tokenizers, dialect, None)


@app.command()
def pilot(recipe: str = RecipeArg,
          prompts: int = typer.Option(..., "--prompts", min=1, help="How many real prompts to send"),
          run_dir: Optional[Path] = RunDirOpt, override: Optional[List[str]] = OverrideOpt,
          data: Optional[Path] = typer.Option(None, "--data", help="As for `distill rehearse`"),
          tokenizers: Optional[Path] = typer.Option(None, "--tokenizers",
                                                    help="As for `distill rehearse`")):
    """N real prompts through the real teacher and the filters, the rest rehearsed; prints tokens/s, $ per kept trace, keep rates, the plan recomputed."""
    import json

    from distill.records import RunDir
    from distill.rehearse.run import pilot_text
    rd = _rehearse(recipe, override, run_dir, data, tokenizers, None, prompts)
    typer.echo(pilot_text(json.loads((RunDir(rd).report / "pilot.json").read_text())))


def _rehearse(recipe, override, run_dir, data, tokenizers, dialect, pilot_prompts):
    from distill.rehearse.run import rehearse as run_rehearsal
    if dialect not in (None, "vllm", "deepseek"):
        _fail(InputError(f"--dialect {dialect!r}: vllm or deepseek", key="--dialect"), 2)
    try:
        t0 = time.time()
        rd = run_rehearsal(recipe, override or [], run_dir, data_dir=data, tokenizers=tokenizers,
                           dialect=dialect, pilot_prompts=pilot_prompts)
    except InputError as e:
        _fail(e, 2)
    except KeyboardInterrupt:
        _fail(RuntimeError("interrupted; re-run the same command to resume"), 130)
    except Exception as e:
        import traceback
        traceback.print_exc(limit=-3, file=sys.stderr)
        _fail(e, 1)
    typer.echo(f"{'pilot' if pilot_prompts else 'rehearsal'} done in {time.time() - t0:.0f} s: "
               f"{rd}/report (rehearsal.md says what stood in and what was changed)")
    return rd


@app.command(name="dryrun-teacher")
def dryrun_teacher(tokenizer: str = typer.Option(..., "--tokenizer", help="The teacher's tokenizer (folder or Hub id)"),
                   answers: Optional[Path] = typer.Option(None, "--answers", help="Answer key (JSONL)"),
                   dialect: str = typer.Option("vllm", "--dialect", help="vllm or deepseek"),
                   model: str = typer.Option("dryrun", "--model", help="The served model name"),
                   mix: Optional[str] = typer.Option(None, "--mix", help="Outcome shares, e.g. right=0.6,wrong=0.4"),
                   api_key_env: Optional[str] = typer.Option(None, "--api-key-env",
                                                             help="Demand the key in this variable"),
                   port: int = typer.Option(8000), host: str = typer.Option("127.0.0.1")):
    """Serve a dry-run teacher: answers like a reasoning model (right, wrong, truncated, ...) in vLLM's or DeepSeek's dialect."""
    from distill.serving.dryrun import main as dryrun_main
    argv = ["--tokenizer", tokenizer, "--dialect", dialect, "--model", model,
            "--port", str(port), "--host", host]
    for flag, value in (("--answers", answers), ("--mix", mix), ("--api-key-env", api_key_env)):
        if value is not None:
            argv += [flag, str(value)]
    dryrun_main(argv)


@app.command()
def serve(model: str = typer.Argument(..., help="Local path, Hub id, or toy:teacher / toy:student / toy:student-l"),
          port: int = typer.Option(8000), host: str = typer.Option("127.0.0.1")):
    """Serve a local model over the OpenAI chat-completions API."""
    from distill.serving.server import main as serve_main
    from distill.models import resolve_model
    serve_main(["--model", resolve_model(model, key=None), "--port", str(port), "--host", host,
                "--served-name", model])


if __name__ == "__main__":
    app()
