"""Item 5: cold start (import time of ``app`` in fresh interpreters) and the deployment zip's size."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Timed inside the child: only the imports (and, for the second, what the first request adds
# before any AWS call: the campaign, loaded from its compiled form), in a copy of what the
# deployment zip holds of ours (import_times).
APP = "import time; t = time.perf_counter(); import app; print(time.perf_counter() - t)"
APP_AND_CAMPAIGN = (
    "import time; t = time.perf_counter(); import app; from chalicelib.config import load_campaign; "
    "load_campaign('demo'); print(time.perf_counter() - t)"
)
BARE = (
    "import time; t = time.perf_counter(); from chalice import Chalice; import boto3; "
    "app = Chalice('x'); print(time.perf_counter() - t)"
)
# Libraries a cold start should not need: validating the campaign file (and some requests) does.
HEAVY = ("pydantic", "yaml", "email_validator", "jinja2")
HEAVY_AFTER = (
    "import sys, app; from chalicelib.config import load_campaign; load_campaign('demo'); "
    f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
)
# The pinned runtime requirements and what they pull in: what a real `chalice package` vendors.
RUNTIME_DISTRIBUTIONS = (
    "pydantic",
    "pydantic-core",
    "email-validator",
    "jinja2",
    "markupsafe",
    "pyyaml",
    "dnspython",
    "idna",
    "annotated-types",
    "typing-extensions",
    "typing-inspection",
)


@dataclass
class Timing:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRELLIS_"))}
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _time(code: str, cwd: Path) -> float:
    result = subprocess.run(  # noqa: S603 - our own interpreter and fixed code
        [sys.executable, "-c", code], cwd=cwd, env=_child_env(), capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def import_times(runs: int) -> dict[str, Timing]:
    """Median of ``runs`` fresh interpreters each, interleaved so that load on the machine hits all alike."""
    from infra.package import ship_campaign

    with tempfile.TemporaryDirectory() as bare_dir, tempfile.TemporaryDirectory() as app_dir:
        # What the deployment zip holds of ours: app.py, chalicelib as bytecode and the campaign
        # with its compiled form, made by the step both deploy paths take (infra/package.py).
        shipped = Path(app_dir)
        shutil.copy2(REPO / "app.py", shipped / "app.py")
        shutil.copytree(REPO / "chalicelib", shipped / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "campaigns", shipped / "campaigns", ignore=shutil.ignore_patterns("*.compiled.json"))
        ship_campaign(shipped, "demo")
        samples: dict[str, list[float]] = {"app": [], "app + campaign": [], "bare": []}
        for run in range(runs + 1):
            app = _time(APP, shipped)
            campaign = _time(APP_AND_CAMPAIGN, shipped)
            bare = _time(BARE, Path(bare_dir))
            if run:  # the first round warms the OS file cache
                samples["app"].append(app)
                samples["app + campaign"].append(campaign)
                samples["bare"].append(bare)
    return {name: Timing(values) for name, values in samples.items()}


def heavy_after_import() -> list[str]:
    """Which of ``HEAVY`` are in sys.modules after ``import app`` and loading the campaign."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and fixed code
        [sys.executable, "-c", HEAVY_AFTER], cwd=REPO, env=_child_env(), capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def package_zip() -> int:
    """Bytes of the deployment zip from `chalice package`, on a copy with an empty requirements.txt
    (testkit.packaging, as the packaging test builds it: our own files only)."""
    from testkit.packaging import chalice_package

    with tempfile.TemporaryDirectory() as base_dir:
        result, zip_path = chalice_package(Path(base_dir))
        result.check_returncode()
        return zip_path.stat().st_size


def site_packages_bytes() -> dict[str, int]:
    """Installed size of each pinned runtime distribution in this venv (files as installed)."""
    sizes: dict[str, int] = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total = 0
        for file in distribution.files or []:
            path = Path(str(distribution.locate_file(file)))
            if path.is_file() and "__pycache__" not in path.parts:
                total += path.stat().st_size
        sizes[name] = total
    return sizes


def table(times: dict[str, Timing], zip_bytes: int, deps: dict[str, int]) -> list[str]:
    bare = times["bare"].median
    lines = [
        "| what | median (ms) | min / max (ms) | runs | vs bare Chalice + boto3 |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "bare": "bare app: `from chalice import Chalice; import boto3; Chalice('x')`",
        "app": "`import app` (Trellis)",
        "app + campaign": "`import app` + load the compiled demo campaign",
    }
    for name in ("bare", "app", "app + campaign"):
        t = times[name]
        lines.append(
            f"| {labels[name]} | {t.median * 1000:.0f} | {min(t.samples) * 1000:.0f} / {max(t.samples) * 1000:.0f} | "
            f"{len(t.samples)} | {t.median / bare:.2f}x |"
        )
    lines += [
        "",
        "| package | size |",
        "|---|---:|",
        f"| deployment zip, our files only (`chalice package`, empty requirements.txt) | {zip_bytes / 1024:.0f} KiB |",
        f"| pinned runtime requirements installed in the venv ({len(deps)} distributions, uncompressed) | "
        f"{sum(deps.values()) / 1024 / 1024:.1f} MiB |",
        "| of it: "
        + ", ".join(f"{k} {v / 1024 / 1024:.1f}" for k, v in sorted(deps.items(), key=lambda kv: -kv[1])[:4])
        + " MiB | |",
    ]
    return lines


def to_json(times: dict[str, Timing]) -> str:
    return json.dumps({k: v.samples for k, v in times.items()})
