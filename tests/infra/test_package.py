"""The deployed Lambda zip holds, and can read, what the code reads at run time.

Chalice packages only app.py, chalicelib/ and the contents of vendor/. templates/ and campaigns/
reach the zip through the symlinks vendor/templates -> ../templates and vendor/campaigns ->
../campaigns, which Chalice's packager follows (os.walk(..., followlinks=True) in
_add_vendor_files). This test runs the real `chalice package` and checks the zip it produces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from testkit.packaging import REPO, chalice_package

# Top-level names that must never be in the zip: they are for development, not the Lambda.
FORBIDDEN = ("tests", "twin", ".venv", "infra", "docs", "vendor", ".chalice", ".ci", ".git", "README.md")

LOAD_SCRIPT = """
import json
import chalicelib
import chalicelib.config
from chalicelib.config import load_campaign
from chalicelib.rendering import render_page

campaign = load_campaign("demo")
html = render_page("error.html", heading="h", message="m", fields={}, back_url=None)
print(json.dumps({
    "app_root": str(chalicelib.config.APP_ROOT),
    "chalicelib": chalicelib.__file__,
    "campaign": campaign.name,
    "html": html,
}))
"""


def _files_under(root: Path, directory: str) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in (root / directory).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run `chalice package --stage dev` on a copy of the project; return deployment.zip."""
    result, zip_path = chalice_package(tmp_path_factory.mktemp("package"), timeout=120)
    assert result.returncode == 0, f"chalice package failed:\n{result.stdout}\n{result.stderr}"
    assert zip_path.is_file(), f"no deployment.zip in {sorted(p.name for p in zip_path.parent.iterdir())}"
    return zip_path


@pytest.fixture(scope="module")
def names(deployment: Path) -> set[str]:
    with zipfile.ZipFile(deployment) as zf:
        return set(zf.namelist())


def test_zip_holds_the_app_code(names: set[str]) -> None:
    assert "app.py" in names
    code = {p for p in _files_under(REPO, "chalicelib") if p.endswith(".py")}
    assert "chalicelib/config.py" in code
    assert code - names == set(), "chalicelib modules missing from the zip"


def test_zip_holds_every_template_and_campaign(names: set[str]) -> None:
    assert "templates/pages/error.html" in names
    assert "campaigns/demo.yaml" in names
    for directory in ("templates", "campaigns"):
        expected = _files_under(REPO, directory)
        assert expected, f"nothing under {directory}/ in the checkout"
        assert expected - names == set(), f"{directory}/ files missing from the zip (vendor symlink?)"


def test_zip_holds_nothing_for_development(names: set[str]) -> None:
    shipped = {name.split("/", 1)[0] for name in names}
    assert shipped.isdisjoint(FORBIDDEN), sorted(shipped & set(FORBIDDEN))
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_lambda_reads_templates_and_campaigns_from_the_zip(deployment: Path, tmp_path: Path) -> None:
    extracted = tmp_path / "task"  # the Lambda runtime unpacks the zip to /var/task
    with zipfile.ZipFile(deployment) as zf:
        zf.extractall(extracted)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Only the extracted zip and the venv's third-party libraries; -S skips site (so no .pth files
    # or user site-packages add paths), -P keeps cwd off sys.path. Third-party libs come after the
    # zip, as on Lambda, where the zip's own contents come first.
    site_packages = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(extracted), site_packages]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-S", "-P", "-c", LOAD_SCRIPT],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    # Read from the extracted zip, not from the checkout.
    assert Path(loaded["app_root"]) == extracted.resolve()
    assert Path(loaded["chalicelib"]).resolve().is_relative_to(extracted.resolve())
    assert loaded["campaign"] == "demo"
    assert "<h1>h</h1>" in loaded["html"]
    assert "<p>m</p>" in loaded["html"]
    assert "<!doctype html>" in loaded["html"]  # base.html, which error.html extends
