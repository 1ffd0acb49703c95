"""`harness`: list, validate, run and report experiments; print the spec JSON Schema.

The environment is read here and only here (HARNESS_CACHE_DIR, HARNESS_DATA_MIRROR,
HARNESS_RESULTS_DIR); everything below receives plain arguments.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import click

from harness.fsutil import DEFAULT_CACHE_DIR
from registry.errors import SpecError

PROFILE_CHOICE = click.Choice(["tiny", "local", "paper"])


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def user_errors(func):
    """Turn errors a user can cause into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SpecError as exc:
            _fail(str(exc), 2)
        except SystemExit:
            raise
        except BaseException as exc:
            _fail_if_users(exc)
            raise

    return wrapper


def _fail_if_users(exc: BaseException) -> None:
    """Exit with one line for an error a user can cause; return for any other. The error classes are imported
    here, once one is raised, so that commands that never touch models do not import torch to start."""
    from harness.analyze import SavedRunError
    from harness.data import DataError
    from harness.fsutil import Interrupted, RunLocked
    from harness.models import DeviceUnavailable, ModelFetchError, NonFiniteActivationError
    from harness.plan import PlanError
    from harness.sharding import ShardingError

    if isinstance(exc, (DataError, ModelFetchError, NonFiniteActivationError, IndexError, FloatingPointError,
                        RunLocked, DeviceUnavailable, SavedRunError, PlanError, ShardingError)):
        _fail(str(exc), 1)
    elif isinstance(exc, MemoryError):
        _fail("out of memory (an allocation could not succeed); use a smaller batch_size or profile", 1)
    elif isinstance(exc, RuntimeError):
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
            _fail(f"out of memory: {str(exc).splitlines()[0]}; use a smaller batch_size or profile", 1)
    elif isinstance(exc, OSError):  # read-only folder, disk full, a file where a folder should be
        message = exc.strerror or str(exc)
        _fail(f"{exc.filename}: {message}" if exc.filename else message, 1)
    elif isinstance(exc, Interrupted):  # the command says what it left in place
        _fail(str(exc), 130)
    elif isinstance(exc, KeyboardInterrupt):
        _fail("interrupted; nothing was being written", 130)


results_option = click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
                              envvar="HARNESS_RESULTS_DIR", show_default=True, help="Where run directories go.")
specs_option = click.option("--specs", "specs_dir", type=click.Path(path_type=Path), default=Path("specs"),
                            show_default=True, help="Folder of spec files.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Declarative experiment registry and reproducibility harness for LLM-internals experiments."""


@main.command("list")
@specs_option
@results_option
@user_errors
def list_specs(specs_dir: Path, results_dir: Path):
    """List every spec: name, kind, source, profiles it can run on, last result."""
    from harness.analyze import SavedRunError, read_saved
    from registry.catalog import runnable_profiles
    from registry.loader import spec_files
    from registry import load_spec_all_profiles

    rows = [("NAME", "KIND", "SOURCE", "PROFILES", "LAST RESULT")]
    for path in spec_files([specs_dir]):
        by_profile = load_spec_all_profiles(path)
        spec = by_profile["local"]
        run_file = results_dir / spec.name / "run.json"
        if run_file.is_file():
            run = read_saved(run_file, lambda p: json.loads(p.read_text(encoding="utf-8")))
            if not isinstance(run, dict) or not {"name", "profile", "started_utc", "wall_seconds"} <= set(run):
                raise SavedRunError(f"{run_file}: not a run record (it needs name, profile, started_utc and "
                                    f"wall_seconds)")
            if run["name"] != spec.name:
                raise SavedRunError(f"{run_file}: records a run of {run['name']!r}, not of {path}")
            if not (results_dir / spec.name / "records.jsonl").is_file():
                raise SavedRunError(f"{results_dir / spec.name}: run.json without records.jsonl (an incomplete run "
                                    f"folder); rerun the spec")
            last = f"{run['profile']}, {run['started_utc'][:16].replace('T', ' ')}, {run['wall_seconds']:.0f}s"
        else:
            last = "—"
        rows.append((spec.name, spec.kind, _source_cell(spec.source), ",".join(runnable_profiles(by_profile)), last))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _source_cell(source) -> str:
    """`001 §1,2,3…` for a seed report, the reference cut to 30 characters otherwise, `—` for none."""
    if source is None:
        return "—"
    document = source.seed[:3] if source.seed else (source.reference if len(source.reference) <= 30
                                                    else source.reference[:29] + "…")
    if not source.sections:
        return document
    return f"{document} §" + ",".join(source.sections[:3]) + ("…" if len(source.sections) > 3 else "")


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]):
    """Validate spec files (default: every file in specs/) under every profile."""
    from registry.catalog import runnable_profiles
    from registry.loader import spec_files
    from registry import load_spec_all_profiles

    try:
        files = spec_files(list(paths) or [Path("specs")])
    except SpecError as exc:
        _fail(str(exc), 2)
    failures = 0
    for path in files:
        try:
            by_profile = load_spec_all_profiles(path)
        except SpecError as exc:
            failures += 1
            click.echo(f"error: {exc}", err=True)
            continue
        spec = by_profile["local"]
        click.echo(f"ok     {path}  ({spec.kind}; runs on: {', '.join(runnable_profiles(by_profile)) or 'no profile'})")
    if failures:
        click.echo(f"{failures} of {len(files)} spec files failed validation", err=True)
        sys.exit(2)
    if not files:
        _fail("no spec files found", 2)


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--profile", type=PROFILE_CHOICE, default="local", show_default=True,
              help="tiny: random tiny models, synthetic data; local: real small models on CPU; paper: the reports' models.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec field, e.g. --set seed=3 --set prompts.0.text='Hello'. Repeatable.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--results-dir", type=click.Path(path_type=Path), default=None, envvar="HARNESS_RESULTS_DIR",
              help="Write <results-dir>/<name>/ (default: results/ for the pipeline's own runs, else a run place "
                   "under --runs-dir).")
@click.option("--run-id", default=None, metavar="ID",
              help="Name this run's place: <runs-dir>/<ID>/results/<name>/ (default for a run that is not the "
                   "pipeline's: a UTC timestamp, the profile and a hash of the overrides).")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), envvar="HARNESS_RUNS_DIR",
              show_default=True, show_envvar=True, help="Where run places go.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path(os.environ.get("HARNESS_CACHE_DIR") or
                                                                          DEFAULT_CACHE_DIR),
              envvar="HARNESS_CACHE_DIR", show_default=True, show_envvar=True,
              help="Downloaded wheels, GGUF files, dequantised weights and resumable training state.")
@click.option("--data-mirror", type=click.Path(path_type=Path, file_okay=False), default=None, envvar="HARNESS_DATA_MIRROR",
              show_envvar=True,
              help="Offline dataset folder laid out <mirror>/<name>/<split>.jsonl; without it datasets load from the hub.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--no-analyze", is_flag=True,
              help="Write only records.jsonl, run.json and curves.csv (what the DVC run stage does); "
                   "`harness analyze` adds metrics.json and figures/.")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2",
              help="Run every combination of the swept values, each in its own run directory under one run place, "
                   "and compare them in <place>/sweep.md. Repeatable.")
@click.option("--seeds", default=None, metavar="S1,S2",
              help="Training seeds of every variant (the kind's seed axis; kinds without one sweep `seed`).")
@user_errors
def run(spec: Path, profile: str, overrides: tuple[str, ...], device: str, results_dir: Path | None, run_id: str | None,
        runs_dir: Path, cache_dir: Path, data_mirror: Path | None, quiet: bool, no_analyze: bool,
        sweeps: tuple[str, ...], seeds: str | None):
    """Run one experiment spec, then analyse it. The pipeline's own runs (the profile params.yaml names, no --set)
    write results/<name>/; any other run gets its own place, runs/<run id>/results/<name>/, and never
    overwrites the committed results."""
    if quiet:
        _silence_library_progress()  # before tqdm is imported: it reads TQDM_DISABLE once, on import
    from harness.engine import RunSettings, run_spec
    from harness.places import pipeline_profile, results_dir_for

    if data_mirror is not None and not data_mirror.is_dir():
        raise SpecError(f"data mirror folder {str(data_mirror)!r} does not exist")
    from harness.sweep import normalise

    overrides = tuple(normalise(o) for o in overrides)
    if sweeps or seeds is not None:
        return _sweep(spec, profile, overrides, device, run_id, runs_dir, cache_dir, data_mirror, quiet, sweeps, seeds)
    results_dir, place = results_dir_for(profile, overrides, results_dir, run_id, pipeline_profile(), runs_dir)
    settings = RunSettings(profile=profile, results_dir=results_dir, cache_dir=cache_dir, data_mirror=data_mirror,
                           device=device, overrides=overrides, show_progress=not quiet)
    _refuse_what_cannot_fit(spec, profile, overrides, device)
    summary = run_spec(spec, settings)
    if int(os.environ.get("RANK", "0")) > 0:
        return  # under a multi-process launch only the main process reports and analyses what it wrote
    click.echo(f"\n{summary.name}: done in {summary.wall_seconds:.1f} s -> {summary.run_dir}/")
    if not no_analyze:
        try:
            _analyze_and_show(spec, results_dir, summary.name)
        except KeyboardInterrupt:
            from harness.fsutil import Interrupted

            raise Interrupted(f"interrupted during the analysis; the new run is complete in {summary.run_dir}/ but "
                              f"has no metrics.json or figures/ yet: run `harness analyze {spec}"
                              f"{'' if place is None else f' --run {place}'}`") from None
    if place is not None:
        click.echo(f"This run is not the pipeline's own ({profile} profile"
                   f"{', with --set overrides' if overrides else ''}), so it has its own place, {place}/; "
                   f"`harness report --run {place}` renders it into {place}/reports/.")
    elif not no_analyze:
        click.echo("Run `harness report` to render every table and figure into reports/.")


def _sweep(spec, profile, overrides, device, run_id, runs_dir, cache_dir, data_mirror, quiet, sweeps, seeds) -> None:
    """`run --sweep/--seeds`: every variant into one run place, then the comparison page."""
    from harness.engine import RunSettings
    from harness.places import default_run_id, results_dir_for
    from harness.sweep import run_sweep

    run_id = run_id or default_run_id(profile, overrides + sweeps + ((seeds,) if seeds else ()))
    _, place = results_dir_for(profile, overrides, None, run_id, "", runs_dir)
    settings = RunSettings(profile=profile, cache_dir=cache_dir, data_mirror=data_mirror, device=device,
                           overrides=overrides, show_progress=not quiet)
    page = run_sweep(spec, settings, sweeps, seeds, place)
    click.echo(f"\nwrote every variant under {place}/ and the comparison {page}")


def _silence_library_progress() -> None:
    """--quiet: the model libraries' own bars (GGUF dequantisation, weight loading) stay off too."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def _refuse_what_cannot_fit(spec_path: Path, profile: str, overrides: tuple[str, ...], device: str) -> None:
    """The planner's estimate against the machine, before any model loads (a spec the planner cannot
    size, e.g. a model without a catalog `shape:`, is not checked)."""
    from harness.models import resolve_device
    from harness.plan import check_fits, plan_spec
    from registry import load_spec

    try:
        plan = plan_spec(load_spec(spec_path, profile, overrides), profile)
    except (ValueError, SpecError):
        return  # run_spec reports a spec problem, located, in its own words
    check_fits(plan, resolve_device(device))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--profile", type=PROFILE_CHOICE, default="paper", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec field. Repeatable.")
@user_errors
def plan(paths: tuple[Path, ...], profile: str, overrides: tuple[str, ...]):
    """Parameters, memory (weights, KV cache, activations, optimizer) and tokens per spec, and which GPUs fit it."""
    from registry.catalog import check_runnable
    from harness.plan import describe, plan_spec
    from registry.loader import spec_files
    from registry import load_spec

    files = spec_files(list(paths) or [Path("specs")])
    one_file = len(paths) == 1 and Path(paths[0]).is_file()
    shown = 0
    for path in files:
        spec = load_spec(path, profile, overrides)
        try:
            check_runnable(spec, profile, None)
        except SpecError as exc:
            if one_file:
                raise exc.located(str(path)) from None
            if paths:  # a folder or several specs: name each one this profile cannot run, in one line, and go on
                click.echo(f"{spec.name} ({profile} profile): not planned: {exc}")
            continue  # the default listing skips them silently
        try:
            lines = describe(plan_spec(spec, profile))
        except ValueError as exc:
            lines = [f"{spec.name} ({profile} profile): cannot be planned: {exc}"]
        click.echo("\n".join(lines))
        shown += 1
    if not shown:
        _fail(f"no spec runs on the {profile} profile", 2)


@main.command("dry-run")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--size", type=click.Choice(["real", "stand-in"]), default="stand-in", show_default=True,
              help="real: the published architecture sizes; stand-in: the same architectures at width 64.")
@click.option("--steps", type=int, default=8, show_default=True, help="Training steps (or chunks) the run is cut to.")
@click.option("--items", type=int, default=16, show_default=True, help="Items the run is cut to, wherever it draws items.")
@click.option("--tokens", type=int, default=None,
              help="Cap on generated tokens (default: the spec's lengths, which are what memory depends on).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec field. Repeatable.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("dry-runs"), show_default=True,
              help="Where each measurement goes, as <spec>.<size>.<device>.json (never results/).")
@user_errors
def dry_run(paths: tuple[Path, ...], size: str, steps: int, items: int, tokens: int | None, overrides: tuple[str, ...], device: str,
            out_dir: Path):
    """Run paper specs with random weights at their architectures' sizes, synthetic items and a few steps, and
    measure peak memory and speed beside `harness plan`'s estimate. Nothing is downloaded; nothing is a finding."""
    from harness.dryrun import describe, dry_run as run_dry, summary_table, write
    from registry.catalog import check_runnable
    from harness.models import resolve_device
    from registry.loader import spec_files
    from registry import load_spec

    if steps < 1 or items < 1 or (tokens is not None and tokens < 1):
        raise SpecError("--steps, --items and --tokens must be at least 1")
    files = spec_files(list(paths) or [Path("specs")])
    one_file = len(paths) == 1 and Path(paths[0]).is_file()
    if one_file:
        try:
            check_runnable(load_spec(files[0], "paper", overrides), "paper", None)
        except SpecError as exc:
            raise exc.located(str(files[0])) from None
        result = run_dry(files[0], size=size, device=resolve_device(device), steps=steps, items=items, tokens=tokens,
                         overrides=overrides)
        click.echo("\n".join(describe(result)) + f"\n  -> {write(result, out_dir)}")
        return
    # Several specs: each in its own process, so one spec's peak is not hidden by memory an earlier one freed
    # (a process reuses it without its resident set growing), and one that breaks does not stop the rest.
    options = ["--size", size, "--steps", str(steps), "--items", str(items), "--device", device, "--out", str(out_dir),
               *(["--tokens", str(tokens)] if tokens else []), *(arg for o in overrides for arg in ("--set", o))]
    done, failed = 0, []
    for path in files:
        try:
            check_runnable(load_spec(path, "paper", overrides), "paper", None)
        except SpecError as exc:
            click.echo(f"{path}: no dry run: {exc}")
            continue
        child = subprocess.run([sys.executable, "-m", "harness.cli", "dry-run", str(path), *options],
                               stdout=None, stderr=subprocess.PIPE, text=True)
        if child.returncode == 0:
            done += 1
            continue
        last = next((line for line in reversed(child.stderr.splitlines()) if line.strip()), f"exit {child.returncode}")
        failed.append(path)
        click.echo(f"{path}: dry run FAILED: {last.strip()}", err=True)
    if done:
        summary = Path(out_dir) / "summary.md"
        summary.write_text(summary_table(out_dir))
        click.echo(f"{done} dry runs; measured beside planned: {summary}")
    if failed:
        _fail(f"{len(failed)} dry run(s) failed: {', '.join(p.stem for p in failed)}", 1)
    if not done:
        _fail("no spec runs on the paper profile", 2)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--executor", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="slurm: a SLURM cluster; local: subprocesses on this machine (for trying it out).")
@click.option("--profile", type=PROFILE_CHOICE, default="paper", show_default=True)
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs per job (0: CPU only).")
@click.option("--gpu-memory", "gpu_memory", type=float, default=None, metavar="GIB",
              help="Memory of the partition's GPUs; a spec whose plan needs more is refused before anything is queued.")
@click.option("--cpus", type=int, default=8, show_default=True)
@click.option("--timeout", "timeout_min", type=int, default=240, show_default=True, help="Minutes per job.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec field. Repeatable.")
@click.option("--wait", is_flag=True, help="Wait for every job and report how it ended.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=None, envvar="HARNESS_RESULTS_DIR",
              help="Write <results-dir>/<name>/ (default: results/ for the pipeline's own runs, else a run place).")
@click.option("--run-id", default=None, metavar="ID", help="Name the run place the jobs write (see `harness run`).")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), envvar="HARNESS_RUNS_DIR",
              show_default=True, help="Where run places go.")
@click.option("--logs", "log_dir", type=click.Path(path_type=Path), default=Path("logs/submitit"), show_default=True,
              help="Where submitit keeps each job's script, stdout and stderr.")
@user_errors
def submit(specs: tuple[Path, ...], executor: str, profile: str, partition: str | None, gpus: int,
           gpu_memory: float | None, cpus: int, timeout_min: int, overrides: tuple[str, ...], wait: bool,
           results_dir: Path | None, run_id: str | None, runs_dir: Path, log_dir: Path):
    """Send each spec to a cluster as one job (submitit) that runs `harness run`; like `harness run`, only the
    pipeline's own runs write results/, any other writes a run place (all jobs of one submission share it)."""
    from harness.places import default_run_id, pipeline_profile, results_dir_for
    from harness.submit import Resources, SubmitError
    from harness.submit import submit as submit_jobs

    pipeline = pipeline_profile()
    if results_dir is None and run_id is None and (profile != pipeline or overrides):
        run_id = default_run_id(profile, overrides)
    results_dir, place = results_dir_for(profile, overrides, results_dir, run_id, pipeline, runs_dir)
    resources = Resources(partition, gpus, gpu_memory, cpus, timeout_min, profile)
    try:
        jobs = submit_jobs(list(specs), executor, resources, results_dir.resolve(), log_dir, overrides)
    except SubmitError as exc:
        _fail(str(exc), exc.exit_code)
    for path, job in zip(specs, jobs):
        click.echo(f"{path}: job {job.job_id} (logs in {log_dir}/)")
    if place is not None:
        click.echo(f"The jobs write their own run place, {place}/ (`harness report --run {place}` renders it).")
    if not wait:
        return
    failed = 0
    for path, job in zip(specs, jobs):
        try:
            job.result()
            click.echo(f"{path}: done -> {results_dir}/{path.stem}/")
        except Exception as exc:  # submitit re-raises the job's failure; its log has the details
            failed += 1
            last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            click.echo(f"error: {path}: job {job.job_id} failed: {last}", err=True)
    if failed:
        sys.exit(1)


def _analyze_and_show(spec: Path, results_dir: Path, name: str | None = None) -> None:
    from harness.analyze import analyze_run
    from harness.report.render import render_table_md

    analysis = analyze_run(spec, results_dir, name)
    if analysis.tables:
        click.echo(render_table_md(analysis.tables[0]))


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
@results_option
@click.option("--run", "run_place", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="A run place (runs/<run id>): analyse the runs in its results/ folder.")
@user_errors
def analyze(specs: tuple[Path, ...], results_dir: Path, run_place: Path | None):
    """Recompute metrics.json and figures/ of saved runs from their records (no models)."""
    if run_place is not None:
        results_dir = run_place / "results"
    for spec in specs:
        _analyze_and_show(spec, results_dir)
        click.echo(f"analysed {results_dir / spec.stem}/")


@main.command()
@specs_option
@results_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("view"), show_default=True,
              help="The site's folder (replaced as a whole; a folder this command did not make is refused).")
@click.option("--run", "run_place", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="A run place (runs/<run id>): view its runs (into DIR/view unless --out says otherwise).")
@click.option("--serve", is_flag=True, help="Then serve the site on localhost (Ctrl-C stops).")
@click.option("--port", type=int, default=8000, show_default=True)
@user_errors
def view(specs_dir: Path, results_dir: Path, out_dir: Path, run_place: Path | None, serve: bool, port: int):
    """A static HTML site of every run: an index with each spec's headline metric and verdicts, every finding,
    and per spec its tables, figures and a sample browser over every output (open index.html; no server needed)."""
    from harness.report.render import OutFolderRefused
    from registry.loader import spec_files
    from harness.view.site import build_site

    specs = spec_files([specs_dir])
    if run_place is not None:
        results_dir = run_place / "results"
        specs = [p for p in specs if (results_dir / p.stem / "run.json").is_file()]
        out_dir = run_place / "view" if out_dir == Path("view") else out_dir
    try:
        index = build_site(specs, results_dir, out_dir)
    except OutFolderRefused as exc:
        _fail(str(exc), 2)
    click.echo(f"wrote {index} (open it in a browser)")
    if serve:
        import functools as _functools
        import http.server

        handler = _functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out_dir))
        with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
            click.echo(f"serving {out_dir}/ at http://127.0.0.1:{port}/ (Ctrl-C stops)")
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@specs_option
@results_option
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the comparison as Markdown.")
@user_errors
def compare(run_a: str, run_b: str, specs_dir: Path, results_dir: Path, out: Path | None):
    """Two runs of the same task, paired item by item: RUN is a run folder, a spec name (its run in the results
    folder) or NAME@REV (the run committed at a git revision, e.g. sst2_8tok@HEAD~5)."""
    from harness.compare import compare as compare_runs
    from harness.compare import markdown

    a, b, rows = compare_runs(run_a, run_b, specs_dir, results_dir)
    text = markdown(a, b, rows)
    click.echo(text, nl=False)
    if out is not None:
        from harness.fsutil import atomic_write_text

        atomic_write_text(out, text)


@main.command()
@click.argument("stages", nargs=-1)
@click.option("--local/--no-local", default=True, show_default=True,
              help="Also compare a shortened local-profile run (real models) for kinds that have one.")
@click.option("--cache-dir", type=click.Path(path_type=Path), envvar="HARNESS_CACHE_DIR", default=None,
              help="Model and state cache both codes use (default: HARNESS_CACHE_DIR or ~/.cache/latent-harness).")
@user_errors
def certify(stages: tuple[str, ...], local: bool, cache_dir: Path | None):
    """Carry stale run stages forward across a refactor, proven: run each spec with the code the committed lock
    was made with and with the working code (tiny profile, and a shortened local run), and only when every output
    is byte-identical `dvc commit` the stage and write certificates/<stage>.json. No STAGES: every stale run stage."""
    from harness.certify import NotARefactor, NotIdentical, certify as certify_stage, stale_run_stages

    repo = Path.cwd()
    targets = list(stages) or stale_run_stages(repo)
    if not targets:
        click.echo("every run stage matches the committed lock: nothing to certify")
        return
    failed = []
    for stage in targets:
        try:
            certificate = certify_stage(repo, stage, local=local, cache_dir=cache_dir, echo=click.echo)
        except (NotARefactor, NotIdentical) as exc:
            click.echo(f"refused: {exc}", err=True)
            failed.append(stage)
            continue
        click.echo(f"{stage}: identical on {', '.join(v['profile'] for v in certificate.variants)}; committed to "
                   f"dvc.lock; certificate certificates/{stage}.json (commit it with dvc.lock)")
    if failed:
        click.echo(f"{len(failed)} of {len(targets)} stage(s) not certified: {' '.join(failed)}", err=True)
        sys.exit(1)


@main.command("new-kind")
@click.argument("name")
@user_errors
def new_kind(name: str):
    """Write a minimal experiment kind NAME (spec model, executor, analysis, figures, README with the checklist of
    what else a kind may provide, an example spec and its test) that validates and runs on the tiny profile."""
    from harness.scaffold import new_kind as write_kind

    for path in write_kind(name, Path(".")):
        click.echo(f"wrote {path}")
    click.echo(f"next: harness run specs/{name}_example.yaml --profile tiny; python -m pytest tests/test_{name}.py; "
               f"then replace the example with your experiment (harness/kinds/{name}/README.md lists the rest)")


@main.command()
@click.option("--write", is_flag=True, help="Write dvc.yaml instead of printing it.")
@click.option("--params", "params_file", type=click.Path(path_type=Path), default=Path("params.yaml"), show_default=True)
@user_errors
def pipeline(write: bool, params_file: Path):
    """dvc.yaml generated from params.yaml and the import graph (each stage depends on exactly what it reads)."""
    from harness.pipeline import dvc_yaml_text

    text = dvc_yaml_text(params_file)
    if write:
        Path("dvc.yaml").write_text(text, encoding="utf-8")
        click.echo("wrote dvc.yaml")
    else:
        click.echo(text, nl=False)


@main.command()
@specs_option
@results_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="The reports folder to (re)write: reports/ by default, <run>/reports with --run. An existing folder "
                   "is replaced only if this command made it.")
@click.option("--run", "run_place", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="A run place (runs/<run id>): render the runs in its results/ folder, and only those.")
@user_errors
def report(specs_dir: Path, results_dir: Path, out_dir: Path | None, run_place: Path | None):
    """Render reports/*.md and reports/*.tex from every spec and its latest result."""
    from harness.pipeline import untracked_spec_fields
    from harness.places import pipeline_profile
    from harness.report.render import OutFolderRefused, ReportInputsError, build_reports
    from registry.loader import spec_files

    untracked = untracked_spec_fields()
    if untracked:
        _fail(untracked[0] + (f" (and {len(untracked) - 1} more)" if len(untracked) > 1 else ""), 2)
    only_run = False
    if run_place is not None:
        if not (run_place / "results").is_dir():
            _fail(f"{run_place} is not a run place (it has no results/ folder)", 2)
        results_dir, only_run = run_place / "results", True
        out_dir = out_dir or run_place / "reports"
    out_dir = out_dir or Path("reports")
    try:
        written = build_reports(spec_files([specs_dir]), results_dir, out_dir, profile=None if only_run else
                                pipeline_profile(), only_run=only_run)
    except OutFolderRefused as exc:
        _fail(str(exc), 2)
    except ReportInputsError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        _fail(f"{len(exc.problems)} input(s) could not be read; {out_dir}/ is unchanged", exc.exit_code)
    click.echo(f"wrote {len(written)} files to {out_dir}/")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write to a file instead of stdout.")
def schema(out: Path | None):
    """JSON Schema of every spec kind (point your editor's YAML plugin at it)."""
    from registry.kinds import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":
    main()
