"""Where a run's results go. The pipeline's own runs (the profile params.yaml names, no `--set` override) write
`results/<name>/`, the committed evidence `dvc repro` keeps. Every other run (another profile, any override, or a
run the user names with --run-id) gets a run place of its own, `runs/<run id>/results/<name>/`, which
`harness report --run runs/<run id>` renders into `runs/<run id>/reports/`: nothing a side run does can overwrite
committed evidence or mix into the committed pages."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path

import yaml

from registry.errors import SpecError, short

PIPELINE_RESULTS = Path("results")
RUNS_DIR = Path("runs")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def pipeline_profile(params_file: Path = Path("params.yaml")) -> str:
    """The profile `dvc repro` runs (params.yaml's `profile`); local when there is no readable params file."""
    try:
        data = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return "local"
    profile = data.get("profile") if isinstance(data, dict) else None
    return profile if isinstance(profile, str) else "local"


def default_run_id(profile: str, overrides: tuple[str, ...]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:6] if overrides else ""
    return "-".join(part for part in (stamp, profile, digest) if part)


def is_pipeline_results(folder: Path) -> bool:
    return Path(folder).resolve() == PIPELINE_RESULTS.resolve()


def results_dir_for(profile: str, overrides: tuple[str, ...], explicit: Path | None, run_id: str | None,
                    pipeline: str, runs_dir: Path = RUNS_DIR) -> tuple[Path, Path | None]:
    """(the folder that receives `<name>/`, the run place or None). An explicit results folder is the user's own,
    except the committed results/, which takes only the pipeline's own runs."""
    own = profile == pipeline and not overrides and run_id is None
    if explicit is not None:
        if is_pipeline_results(explicit) and not own:
            why = f"the {profile} profile" if profile != pipeline else "--set overrides" if overrides else "a run id"
            raise SpecError(f"{explicit} holds the pipeline's committed {pipeline} results; a run with {why} goes to "
                            f"a run place of its own: leave out --results-dir (or name another folder)")
        return Path(explicit), None
    if own:
        return PIPELINE_RESULTS, None
    run_id = run_id or default_run_id(profile, overrides)
    if not RUN_ID.match(run_id):
        raise SpecError(f"--run-id {short(run_id)}: use letters, digits, '.', '_' and '-' (starting with a letter "
                        f"or digit), at most 100 characters")
    place = Path(runs_dir) / run_id
    return place / "results", place
