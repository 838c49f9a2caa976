"""The Copier lifecycle in a user's project: apply, update, drop, re-enable, recopy.

Everything here is real: the template is this repository's working tree committed into a
temporary git repository and tagged twice (``v1``, then ``v2`` with one more HTTP path in
the catalog), as Copier's own update tests do; the user's project is a git repository with
its own package, its own tests and two other templates' answers files; Copier runs through
its API and through its command line with no terminal (``--defaults``, and ``--overwrite``
where the step means to replace files).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import pytest

REPO = Path(__file__).resolve().parent.parent
COPIER = Path(sys.executable).with_name("copier")
ANSWERS = ".copier-answers.demo-traffic.yml"
MODULE = "myapp/demo_traffic.py"

V1_PATHS = 'HTTP_PATHS = ("/users", "/orders", "/products", "/api/health", "/search")'
V2_PATHS = 'HTTP_PATHS = ("/users", "/orders", "/products", "/api/health", "/search", "/checkout")'
USER_PATHS = 'HTTP_PATHS = ("/users", "/orders", "/products", "/api/health", "/search", "/cart")'


def git(cwd: Path, *args: str) -> str:
    """Run git with a throwaway identity, whatever the machine's configuration says."""
    command = [
        "git",
        "-c", "user.name=Demo User",
        "-c", "user.email=demo@example.com",
        "-c", "commit.gpgsign=false",
        "-c", "tag.gpgsign=false",
        "-c", "init.defaultBranch=main",
        *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--allow-empty", "-m", message)


def status(project: Path) -> set[str]:
    """``git status`` of the project, one entry per changed or new file."""
    output = git(project, "status", "--porcelain", "--untracked-files=all")
    return set(output.splitlines())


def copier_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``copier`` as a user would in CI: in the project, no terminal on stdin."""
    return subprocess.run(
        [str(COPIER), *args],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a Copier run that must have succeeded."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


# --- The template, tagged twice ---------------------------------------------------------


@dataclass(frozen=True)
class TemplateRepo:
    path: Path

    @property
    def url(self) -> str:
        return str(self.path)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepo:
    """This repository's working tree as a template repository with tags v1 and v2."""
    path = tmp_path_factory.mktemp("demo-traffic-template")
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if name.startswith("tests/") or not source.is_file():
            continue
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, path / name)
    git(path, "init", "--quiet")
    commit_all(path, "demo-traffic v1")
    git(path, "tag", "v1")
    catalogs = [
        file
        for file in path.rglob("*.jinja")
        if ".git" not in file.parts and V1_PATHS in file.read_text(encoding="utf-8")
    ]
    assert len(catalogs) == 1, f"the catalog line {V1_PATHS!r} is not in exactly one template"
    catalog = catalogs[0]
    catalog.write_text(catalog.read_text(encoding="utf-8").replace(V1_PATHS, V2_PATHS))
    commit_all(path, "demo-traffic v2: a checkout endpoint")
    git(path, "tag", "v2")
    return TemplateRepo(path)


# --- The user's project -----------------------------------------------------------------

OTHER_ANSWERS = {
    ".copier-answers.yml": textwrap.dedent(
        """\
        # Changes here will be overwritten by Copier; do not edit by hand.
        _commit: v1.0.0
        _src_path: {other_template}
        project_name: myapp
        """
    ),
    ".copier-answers.ci.yml": textwrap.dedent(
        """\
        # Changes here will be overwritten by Copier; do not edit by hand.
        _commit: 2.3.1
        _src_path: gh:acme/ci-template
        python_versions: ['3.11', '3.12']
        """
    ),
}

USER_FILES = {
    "pyproject.toml": textwrap.dedent(
        """\
        [project]
        name = "myapp"
        version = "1.0.0"

        [tool.pytest.ini_options]
        testpaths = ["tests"]
        """
    ),
    ".gitignore": "__pycache__/\n.pytest_cache/\n",
    ".editorconfig": "root = true\n",
    "myapp/__init__.py": '"""My app."""\n\nfrom myapp.core import greet\n\n__all__ = ["greet"]\n',
    "myapp/core.py": 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n',
    "tests/test_myapp.py": textwrap.dedent(
        """\
        import importlib
        import pkgutil

        import myapp


        def test_greet():
            assert myapp.greet("demo") == "Hello, demo!"


        def test_every_module_imports():
            for module in pkgutil.walk_packages(myapp.__path__, "myapp."):
                importlib.import_module(module.name)
        """
    ),
}


@pytest.fixture(scope="module")
def other_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another team's template the project already uses (it owns .copier-answers.yml)."""
    path = tmp_path_factory.mktemp("python-base-template")
    (path / "copier.yml").write_text("project_name:\n  type: str\n  default: myapp\n")
    (path / "{{ _copier_conf.answers_file }}.jinja").write_text(
        "# Changes here will be overwritten by Copier; do not edit by hand.\n"
        "{{ _copier_answers|to_nice_yaml -}}\n"
    )
    (path / ".editorconfig").write_text("root = true\n")
    git(path, "init", "--quiet")
    commit_all(path, "python-base 1.0.0")
    git(path, "tag", "v1.0.0")
    (path / ".editorconfig").write_text("root = true\n\n[*.py]\nindent_size = 4\n")
    commit_all(path, "python-base 1.1.0")
    git(path, "tag", "v1.1.0")
    return path


@pytest.fixture
def project(tmp_path: Path, other_template: Path) -> Path:
    """A user's project: a git repository with a package, tests and two templates' answers."""
    root = tmp_path / "project"
    files = {
        **USER_FILES,
        **{
            name: text.format(other_template=other_template) for name, text in OTHER_ANSWERS.items()
        },
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "--quiet")
    commit_all(root, "my app")
    return root


def snapshot(project: Path) -> dict[str, bytes]:
    """Every file the user owns (not Copier's record of our template), by content."""
    return {
        str(path.relative_to(project)): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(project).parts
    }


def assert_project_works(project: Path) -> None:
    """The user's package imports and the user's own test suite passes."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "COV_"))
    }
    environment |= {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # The user's suite imports every module of the package, so a dangling import fails it.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def apply_v1(project: Path, template: TemplateRepo) -> None:
    """Copier's API copies v1 into the project, and the user commits it."""
    copier.run_copy(
        template.url, project, data={"app_name": "myapp"}, defaults=True, vcs_ref="v1", quiet=True
    )
    commit_all(project, "add demo-traffic")


def drop(project: Path, **settings: Any) -> None:
    """Copier's API runs the drop command: ``update -a ... --defaults --data enabled=false``."""
    copier.run_update(
        project,
        answers_file=ANSWERS,
        data={"enabled": False},
        defaults=True,
        overwrite=True,
        **settings,
    )


def edit(project: Path, name: str, old: str, new: str) -> None:
    path = project / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def answers(project: Path) -> str:
    return (project / ANSWERS).read_text(encoding="utf-8")


def command_lines(output: str) -> list[str]:
    return re.findall(r"copier (?:update|recopy)[^\n]*", output)


# --- Apply ------------------------------------------------------------------------------


def test_apply_adds_only_the_module_and_its_own_answers_file(
    project: Path, template: TemplateRepo
) -> None:
    before = snapshot(project)

    ok(copier_cli(project, "copy", "--defaults", "--data", "app_name=myapp", template.url, "."))

    assert status(project) == {f"?? {ANSWERS}", f"?? {MODULE}"}
    after = snapshot(project)
    assert {name: after[name] for name in before} == before
    assert "_commit: v2" in answers(project)
    assert f"_src_path: {template.url}" in answers(project)
    assert_project_works(project)


def test_message_after_copy_shows_run_wire_update_and_drop(
    project: Path, template: TemplateRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    copier.run_copy(template.url, project, data={"app_name": "myapp"}, defaults=True)

    output = capsys.readouterr().err
    assert "python -m myapp.demo_traffic" in output
    assert "from myapp.demo_traffic import DemoTraffic" in output
    assert "DemoTraffic().start()" in output
    assert f"copier update -a {ANSWERS}\n" in output
    assert f"copier update -a {ANSWERS} --defaults --data enabled=false" in output
    assert all(f"-a {ANSWERS}" in line for line in command_lines(output))


def test_copy_over_an_existing_module_is_a_conflict_never_an_overwrite(
    project: Path, template: TemplateRepo
) -> None:
    (project / MODULE).write_text("# my own demo_traffic, not Copier's\n")
    commit_all(project, "my own demo_traffic")

    result = copier_cli(
        project, "copy", "--defaults", "--data", "app_name=myapp", template.url, "."
    )

    assert result.returncode != 0
    assert re.search(r"conflict\S*\s+myapp/demo_traffic\.py", result.stderr), result.stderr
    assert "--overwrite" in result.stderr
    assert (project / MODULE).read_text() == "# my own demo_traffic, not Copier's\n"
    assert status(project) == set()


# --- Update -----------------------------------------------------------------------------


def test_update_keeps_user_edits_that_do_not_collide(project: Path, template: TemplateRepo) -> None:
    apply_v1(project, template)
    edit(project, MODULE, "CACHE_HIT_RATIO = 0.75", "CACHE_HIT_RATIO = 0.9")
    commit_all(project, "more cache hits")

    output = ok(copier_cli(project, "update", "-a", ANSWERS, "--defaults"))

    module = (project / MODULE).read_text(encoding="utf-8")
    assert V2_PATHS in module
    assert "CACHE_HIT_RATIO = 0.9" in module
    assert "<<<<<<<" not in module
    assert "_commit: v2" in answers(project)
    assert status(project) == {f" M {ANSWERS}", f" M {MODULE}"}
    assert "demo-traffic is up to date in myapp/demo_traffic.py" in output


def test_update_turns_a_colliding_edit_into_a_copier_conflict(
    project: Path, template: TemplateRepo
) -> None:
    apply_v1(project, template)
    edit(project, MODULE, V1_PATHS, USER_PATHS)
    commit_all(project, "a cart endpoint")

    copier.run_update(
        project, answers_file=ANSWERS, defaults=True, overwrite=True, conflict="inline", quiet=True
    )

    module = (project / MODULE).read_text(encoding="utf-8")
    conflict = f"<<<<<<< before updating\n{USER_PATHS}\n=======\n{V2_PATHS}\n>>>>>>> after updating"
    assert conflict in module
    unmerged = git(project, "ls-files", "--unmerged").splitlines()
    assert {line.split("\t")[-1] for line in unmerged} == {MODULE}
    assert not list(project.rglob("*.rej"))


def test_update_without_the_answers_file_flag_updates_another_template_never_ours(
    project: Path, template: TemplateRepo
) -> None:
    apply_v1(project, template)
    ours = {name: (project / name).read_bytes() for name in (ANSWERS, MODULE)}

    ok(copier_cli(project, "update", "--defaults"))

    assert {name: (project / name).read_bytes() for name in (ANSWERS, MODULE)} == ours
    assert status(project) == {" M .copier-answers.yml", " M .editorconfig"}


def test_update_without_the_answers_file_flag_and_no_default_answers_file_fails(
    project: Path, template: TemplateRepo
) -> None:
    git(project, "rm", "--quiet", ".copier-answers.yml")
    apply_v1(project, template)

    result = copier_cli(project, "update", "--defaults")

    assert result.returncode != 0
    assert ANSWERS not in result.stdout + result.stderr  # why the README explains it
    assert status(project) == set()


# --- Drop and re-enable -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "version"), [([], "v2"), (["--vcs-ref=:current:"], "v1")], ids=["upgrade", "current"]
)
def test_drop_removes_every_generated_file_even_an_edited_one(
    project: Path, template: TemplateRepo, extra: list[str], version: str
) -> None:
    before = set(snapshot(project))
    apply_v1(project, template)
    generated = set(snapshot(project)) - before - {ANSWERS}
    assert MODULE in generated
    edit(project, MODULE, "CACHE_HIT_RATIO = 0.75", "CACHE_HIT_RATIO = 0.9")
    commit_all(project, "more cache hits")

    output = ok(
        copier_cli(
            project, "update", "-a", ANSWERS, "--defaults", "--data", "enabled=false", *extra
        )
    )

    assert not [name for name in generated if (project / name).exists()]
    assert status(project) == {f" M {ANSWERS}"} | {f" D {name}" for name in generated}
    assert "enabled: false" in answers(project)
    assert f"_commit: {version}" in answers(project)
    assert "Removed: myapp/demo_traffic.py" in output
    assert_project_works(project)


def test_drop_message_names_the_wiring_lines_the_user_must_delete(
    project: Path, template: TemplateRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_v1(project, template)
    wiring = ["from myapp.demo_traffic import DemoTraffic", "DemoTraffic().start()"]
    (project / "myapp/startup.py").write_text(
        '"""Start-up hooks."""\n\n' + "\n".join(wiring) + "\n"
    )
    commit_all(project, "start the demo with the app, as the copy message says")
    capsys.readouterr()

    drop(project, vcs_ref=copier.VcsRef.CURRENT)

    named = {line.strip() for line in capsys.readouterr().err.splitlines() if line[:4] == "    "}
    assert set(wiring) <= named
    startup = project / "myapp/startup.py"
    kept = [line for line in startup.read_text().splitlines() if line.strip() not in named]
    startup.write_text("\n".join(kept) + "\n")
    assert_project_works(project)


def test_reenable_brings_the_files_back(project: Path, template: TemplateRepo) -> None:
    apply_v1(project, template)
    pristine = (project / MODULE).read_bytes()
    drop(project, vcs_ref=copier.VcsRef.CURRENT, quiet=True)
    commit_all(project, "drop demo-traffic")
    assert not (project / MODULE).exists()

    copier.run_update(
        project,
        answers_file=ANSWERS,
        data={"enabled": True},
        defaults=True,
        overwrite=True,
        vcs_ref=copier.VcsRef.CURRENT,
        quiet=True,
    )

    assert (project / MODULE).read_bytes() == pristine
    assert "enabled: true" in answers(project)


# --- Recopy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vcs_ref", "version"), [(copier.VcsRef.CURRENT, "v1"), (None, "v2")], ids=["current", "latest"]
)
def test_recopy_restores_pristine_files(
    project: Path, template: TemplateRepo, vcs_ref: copier.VcsRef | None, version: str
) -> None:
    apply_v1(project, template)
    (project / MODULE).write_text("mangled beyond repair\n")
    commit_all(project, "oops")

    copier.run_recopy(
        project, answers_file=ANSWERS, defaults=True, overwrite=True, vcs_ref=vcs_ref, quiet=True
    )

    fresh = project.parent / "fresh"
    copier.run_copy(
        template.url, fresh, data={"app_name": "myapp"}, defaults=True, vcs_ref=version, quiet=True
    )
    assert (project / MODULE).read_bytes() == (fresh / MODULE).read_bytes()
    assert (V1_PATHS if version == "v1" else V2_PATHS) in (project / MODULE).read_text()


def test_recopy_is_not_the_way_to_drop(project: Path, template: TemplateRepo) -> None:
    apply_v1(project, template)

    copier.run_recopy(
        project,
        answers_file=ANSWERS,
        data={"enabled": False},
        defaults=True,
        overwrite=True,
        vcs_ref=copier.VcsRef.CURRENT,
        quiet=True,
    )

    assert (project / MODULE).exists()
    assert status(project) == {f" M {ANSWERS}"}
