"""The project copied as it would be deployed, and ``chalice package`` run on it: shared by the
packaging tests and the bench's deployment-zip size."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from infra.package import offline_environment

REPO = Path(__file__).resolve().parent.parent
CHALICE = Path(sys.executable).parent / "chalice"

# Kept out of the copy that gets packaged: local state and caches, none of it ours to ship.
# .chalice/deployments in particular is Chalice's package cache, which it would reuse.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".chalice", ".twin", "dist", "preview", "__pycache__", "*.pyc", ".*_cache"
)


def copy_project(dest: Path) -> None:
    """The project as it would be deployed, but with an EMPTY requirements.txt.

    With our pinned requirements, `chalice package` downloads manylinux wheels from PyPI: slow,
    needs the network, and tests Chalice rather than us. What is packaged here is our own files
    (app.py, chalicelib/, templates/, campaigns/ via vendor/); third-party wheels are Chalice's job.
    Everything else in the checkout (tests/, twin/, infra/, docs/ ...) is copied too, so that a
    test asserting none of it ends up in the zip means something.
    """
    # symlinks=True keeps vendor/templates and vendor/campaigns as relative symlinks, which then
    # point at the copy's own templates/ and campaigns/.
    shutil.copytree(REPO, dest, symlinks=True, ignore=_NOT_COPIED)
    (dest / ".chalice").mkdir()
    shutil.copy2(REPO / ".chalice" / "config.json", dest / ".chalice" / "config.json")
    (dest / "requirements.txt").write_text("")


def chalice_package(base: Path, timeout: int = 180) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`chalice package --stage dev` on a copy of the project under ``base`` (``copy_project``),
    with no credentials, endpoint or ~/.aws to find them in: packaging calls no AWS API, it only
    needs a region to write ARNs into sam.json. Returns the process and where its zip is."""
    project, out, home = base / "project", base / "out", base / "home"
    copy_project(project)
    home.mkdir()
    result = subprocess.run(  # noqa: S603 - the venv's chalice on a temporary copy
        [str(CHALICE), "--project-dir", str(project), "package", "--stage", "dev", str(out)],
        cwd=base,
        env=offline_environment(home, region="us-east-1"),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, out / "deployment.zip"
