"""The cold start loads the compiled campaign, and imports none of what validating it takes.

Each check runs in a fresh interpreter (a subprocess): in this one, other tests have imported
pydantic long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib import compiled, compiler
from chalicelib.config import CAMPAIGNS_DIR, load_campaign, load_campaign_file
from chalicelib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# What validating a campaign file (and answering some requests) takes, and no cold start should.
HEAVY = ("pydantic", "pydantic_core", "yaml", "_yaml", "email_validator", "jinja2", "markupsafe")


_EDGES_SCRIPT = """
import builtins, json, sys

edges = set()
real_import = builtins.__import__


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = real_import(name, globals, locals, fromlist, level)
    importer = (globals or {}).get("__name__", "?")
    if level:
        package = (globals or {}).get("__package__") or ""
        base = package.rsplit(".", level - 1)[0] if level > 1 else package
        name = f"{base}.{name}" if name else base
    # Every import statement, also of a module imported before: a module another one already
    # imported would otherwise hide who else imports it.
    edges.add((importer, name))
    for item in fromlist or ():
        if f"{name}.{item}" in sys.modules:
            edges.add((importer, f"{name}.{item}"))
    return module


builtins.__import__ = recording_import
import app
from chalicelib.config import load_campaign

load_campaign("demo")
print(json.dumps(sorted(edges)))
"""


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _heavy(module: str) -> bool:
    return module.split(".")[0] in HEAVY


@pytest.fixture(scope="module")
def app_edges() -> set[tuple[str, str]]:
    """The import edges of `import app` + loading the demo campaign, in a fresh interpreter."""
    return {(a, b) for a, b in json.loads(_run(_EDGES_SCRIPT))}


def _paths_to_heavy(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Every import chain from the -c script to a heavy module."""
    graph: dict[str, set[str]] = {}
    for importer, imported in edges:
        if importer != imported:
            graph.setdefault(importer, set()).add(imported)
    found: list[list[str]] = []
    seen = {"__main__"}
    queue = [["__main__"]]
    while queue:
        path = queue.pop(0)
        for imported in sorted(graph.get(path[-1], ())):
            if _heavy(imported):
                found.append([*path, imported])
            elif imported not in seen:
                seen.add(imported)
                queue.append([*path, imported])
    return found


def test_runtime_and_the_campaign_load_import_nothing_heavy() -> None:
    # What every function's cold start does before its first request: the runtime's wiring and
    # the campaign.
    loaded = json.loads(
        _run(
            "import json, sys\n"
            "import chalicelib.runtime\n"
            "from chalicelib.config import load_campaign\n"
            "campaign = load_campaign('demo')\n"
            "assert type(campaign).__module__ == 'chalicelib.campaign_types', type(campaign)\n"
            "print(json.dumps(sorted(sys.modules)))"
        )
    )
    assert [m for m in loaded if _heavy(m)] == []
    assert "chalicelib.models" not in loaded
    assert "chalicelib.compiler" not in loaded


def test_import_app_and_the_campaign_load_import_nothing_heavy(
    app_edges: set[tuple[str, str]],
) -> None:
    paths = _paths_to_heavy(app_edges)

    assert paths == [], "\n".join(" -> ".join(path) for path in paths)


def test_the_compiled_demo_is_the_validated_demo() -> None:
    validated = load_campaign_file(CAMPAIGNS_DIR / "demo.yaml")

    assert compiled.to_data(load_campaign("demo")) == compiled.to_data(validated)
    assert load_campaign("demo") == compiler.compile_model(validated)


def test_the_generated_records_follow_the_schema() -> None:
    assert compiler.render_types() == compiler.TYPES_PATH.read_text(encoding="utf-8"), (
        "chalicelib/campaign_types.py is behind chalicelib/models.py: run python -m chalicelib.compiler"
    )


def _campaign_copy(directory: Path) -> Path:
    path = directory / "demo.yaml"
    path.write_text((CAMPAIGNS_DIR / "demo.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return path


def test_a_campaign_never_compiled_is_refused_naming_make_validate(tmp_path: Path) -> None:
    _campaign_copy(tmp_path)

    with pytest.raises(ConfigError, match=r"demo\.compiled\.json: no compiled campaign: make validate compiles it"):
        load_campaign("demo", tmp_path)


def test_a_campaign_edited_since_it_was_compiled_is_refused(tmp_path: Path) -> None:
    source = _campaign_copy(tmp_path)
    compiler.compile_to(source, tmp_path)
    assert load_campaign("demo", tmp_path).title == load_campaign("demo").title

    source.write_text(source.read_text(encoding="utf-8").replace("title:", "title: Edited", 1), encoding="utf-8")

    with pytest.raises(ConfigError, match=r"compiled from another version of demo\.yaml: make validate"):
        load_campaign("demo", tmp_path)


def test_the_compiled_form_alone_loads(tmp_path: Path) -> None:
    # As a zip built without the campaign file would hold it: nothing to check it against.
    (tmp_path / "demo.compiled.json").write_text(compiler.compile_file(CAMPAIGNS_DIR / "demo.yaml"), encoding="utf-8")

    assert load_campaign("demo", tmp_path) == load_campaign("demo")


def test_no_campaign_at_all_is_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"demo\.yaml: campaign file not found"):
        load_campaign("demo", tmp_path)


def test_make_validate_compiles_what_it_validates(tmp_path: Path) -> None:
    source = _campaign_copy(tmp_path)

    result = subprocess.run(
        [sys.executable, "-m", "chalicelib.validate", str(source)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "demo.compiled.json" in result.stdout
    assert load_campaign("demo", tmp_path) == load_campaign("demo")
