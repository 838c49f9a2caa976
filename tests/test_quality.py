"""Generated code is the product: every rendered variant passes ruff and mypy --strict and
reads as hand-written (no Jinja left over, no blank-line runs, Python 3.10 syntax)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, render

VENV_BIN = Path(sys.executable).parent

# Standalone answer sets; each framework's tests hold their own variants to the same checks.
VARIANTS = {
    "defaults": {},
    "src_layout": {"app_name": "shop", "package_dir": "src/shop"},
    "subpackage": {"app_name": "shop", "package_dir": "shop/observability"},
    "fast_interval": {"app_name": "api_server", "interval_ms": 10},
    "slow_interval": {"app_name": "_private", "interval_ms": 3600000},
}


def check_python_files(files: list[Path], cwd: Path, mypy_cache: Path | None = None) -> None:
    """Run the repository's ruff rule set, ruff format and mypy --strict on ``files``.

    Checks of several variants can share a ``mypy_cache`` folder, so the frameworks' own
    packages are analysed once rather than per variant.
    """
    names = [str(path) for path in files]
    config = ["--config", str(REPO / "pyproject.toml")]
    cache = ["--no-incremental"] if mypy_cache is None else ["--cache-dir", str(mypy_cache)]
    for command in (
        [str(VENV_BIN / "ruff"), "check", "--no-cache", *config, *names],
        [str(VENV_BIN / "ruff"), "format", "--check", "--no-cache", *config, *names],
        [str(VENV_BIN / "mypy"), "--strict", "--python-version", "3.10", *cache, *names],
    ):
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=180, check=False
        )
        assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout}{result.stderr}"


def assert_reads_hand_written(path: Path) -> None:
    text = path.read_text()
    assert "{{" not in text and "{%" not in text, f"Jinja left in {path.name}"
    assert not re.search(r"\n\n\n\n", text), f"a run of blank lines in {path.name}"
    assert text.endswith("\n") and not text.endswith("\n\n"), f"{path.name} ends untidily"
    compile(text, str(path), "exec", flags=0, dont_inherit=True, _feature_version=10)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = VARIANTS[request.param]
    project = render(tmp_path_factory.mktemp(request.param), **answers)
    package_dir = answers.get("package_dir", answers.get("app_name", "myapp"))
    return project / package_dir / "demo_traffic.py"


def test_rendered_module_passes_ruff_and_mypy_strict(variant: Path) -> None:
    check_python_files([variant], cwd=variant.parent)


def test_rendered_module_reads_as_hand_written(variant: Path) -> None:
    assert_reads_hand_written(variant)


def test_answers_become_python_literals(variant: Path) -> None:
    text = variant.read_text()
    app_name = re.search(r'^APP_NAME = "([A-Za-z_][A-Za-z0-9_]*)"$', text, re.MULTILINE)
    interval = re.search(r"^INTERVAL_MS = (\d+)$", text, re.MULTILINE)
    assert app_name is not None and interval is not None
    assert 'logger = logging.getLogger(f"{APP_NAME}.demo_traffic")' in text


def test_repository_tooling_passes_ruff() -> None:
    """The template's own tests, scripts and benchmarks follow the same rules they enforce."""
    config = ["--config", str(REPO / "pyproject.toml")]
    folders = ["tests", "scripts", "benchmarks"]
    for command in (
        [str(VENV_BIN / "ruff"), "check", "--no-cache", *config, *folders],
        [str(VENV_BIN / "ruff"), "format", "--check", "--no-cache", *config, *folders],
    ):
        result = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{command[1]} failed:\n{result.stdout}{result.stderr}"
