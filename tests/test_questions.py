"""Every question validates: a bad answer gets a one-line reason and nothing is written.

Each bad answer goes through Copier's API as ``--data`` would (``defaults=True`` and
explicit data) into a project that already holds the user's package; the test checks the
reason Copier reports and that the project is exactly as it was. A property test then
feeds arbitrary strings through every free-text answer: each is either rejected with a
validator's reason, or the rendered module compiles to the very same code, with the
answer only ever inside string literals.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import copier
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
ANSWERS = ".copier-answers.demo-traffic.yml"


@pytest.fixture(scope="module")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree's template as a plain folder: Copier renders it without cloning."""
    path = tmp_path_factory.mktemp("template")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        if name.startswith("tests/") or not (REPO / name).is_file():
            continue
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, path / name)
    return path


def copy(template_dir: Path, destination: Path, **answers: Any) -> None:
    copier.run_copy(
        str(template_dir),
        destination,
        data={"app_name": "myapp", **answers},
        defaults=True,
        quiet=True,
        unsafe=False,
    )


def files_in(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def user_project(root: Path) -> Path:
    """A project with the user's package in it, before anything is applied."""
    (root / "myapp").mkdir(parents=True)
    (root / "myapp" / "__init__.py").write_text('"""My app."""\n')
    return root


IDENTIFIER = "is not a Python identifier: use ASCII letters, digits and underscores"
KEYWORD = "is a Python keyword and cannot be imported"
ABSOLUTE = "is absolute: give a path relative to the project"
ESCAPES = "leaves the project: use a relative path with forward slashes and no '..'"
OUTSIDE = "is not inside the package 'myapp': use myapp, src/myapp or a subpackage"
TOO_SMALL = "is too small: use at least 10 (milliseconds; the default is 2000)."
TOO_LARGE = "is more than an hour: use at most 3600000 (the default is 2000)."
EMPTY_DIR = "give the folder of your package, e.g. myapp or src/myapp."
NOT_INT = "is not a whole number of milliseconds: write digits only, e.g. 2000."
NOT_A_CHOICE = "Invalid choice for 'framework': "
NOT_TARGET = "is not module:attribute or module:factory()"
NOT_DOTTED = "is not a dotted module path"


def refused(question: str, answer: Any, reason: str, *, in_copier_words: bool = False) -> Any:
    """A bad answer and the one line Copier must report for it."""
    line = reason if in_copier_words else f"Validation error for question '{question}': {reason}"
    return pytest.param({question: answer}, line, id=f"{question}={answer!r}")


# Questions are asked in order, so a bad app_name never reaches package_dir's validator.
BAD_ANSWERS = [
    refused("app_name", "my-app", f'app_name "my-app" {IDENTIFIER}'),
    refused("app_name", "123app", f'app_name "123app" {IDENTIFIER}'),
    refused("app_name", "class", f'app_name "class" {KEYWORD}'),
    refused("app_name", "import", f'app_name "import" {KEYWORD}'),
    refused("app_name", "None", f'app_name "None" {KEYWORD}'),
    # Python takes both as identifiers (NFKC even folds the fullwidth one into "myapp"), so
    # `import` would name another module than the folder; the JSON escape shows the culprit.
    refused("app_name", "my\u0430pp", f'app_name "my\\u0430pp" {IDENTIFIER}'),
    refused("app_name", "\uff4dyapp", f'app_name "\\uff4dyapp" {IDENTIFIER}'),
    refused("app_name", "", "app_name is empty: give your app's import package, e.g. myapp."),
    refused("app_name", " ", f'app_name " " {IDENTIFIER}'),
    refused("app_name", "\t", f'app_name "\\t" {IDENTIFIER}'),
    refused("app_name", "my app", f'app_name "my app" {IDENTIFIER}'),
    refused("app_name", "myapp\n", f'app_name "myapp\\n" {IDENTIFIER}'),
    refused("app_name", "my.app", f'app_name "my.app" {IDENTIFIER}'),
    refused("package_dir", "/srv/myapp", f'package_dir "/srv/myapp" {ABSOLUTE}'),
    refused("package_dir", "C:/myapp", f'package_dir "C:/myapp" {ABSOLUTE}'),
    refused("package_dir", "\\myapp", f'package_dir "\\\\myapp" {ABSOLUTE}'),
    refused("package_dir", "../myapp", f'package_dir "../myapp" {ESCAPES}'),
    refused("package_dir", "myapp/../../etc", f'package_dir "myapp/../../etc" {ESCAPES}'),
    refused("package_dir", "myapp\\sub", f'package_dir "myapp\\\\sub" {ESCAPES}'),
    refused("package_dir", "otherapp", f'package_dir "otherapp" {OUTSIDE}'),
    refused("package_dir", "src/otherapp", f'package_dir "src/otherapp" {OUTSIDE}'),
    refused("package_dir", "myapp2", f'package_dir "myapp2" {OUTSIDE}'),
    refused("package_dir", "myapp/my-sub", f'package_dir "myapp/my-sub" {OUTSIDE}'),
    refused("package_dir", "", f"package_dir is empty: {EMPTY_DIR}"),
    refused("interval_ms", 0, f"interval_ms 0 {TOO_SMALL}"),
    refused("interval_ms", -1, f"interval_ms -1 {TOO_SMALL}"),
    refused("interval_ms", -2000, f"interval_ms -2000 {TOO_SMALL}"),
    refused("interval_ms", 1, f"interval_ms 1 {TOO_SMALL}"),
    refused("interval_ms", "9", f"interval_ms 9 {TOO_SMALL}"),
    refused("interval_ms", 3_600_001, f"interval_ms 3600001 {TOO_LARGE}"),
    # Copier casts to int before any validator runs, and reports the cast in its own words.
    refused("interval_ms", "abc", f'interval_ms "abc" {NOT_INT}'),
    refused("interval_ms", "2s", f'interval_ms "2s" {NOT_INT}'),
    refused("interval_ms", "", f"interval_ms null {NOT_INT}"),
    refused("interval_ms", "2.5", f"interval_ms 2.5 {NOT_INT}"),
    refused("interval_ms", "true", f"interval_ms true {NOT_INT}"),
    # Copier checks choices before the validator, in its own words too (and then lists them).
    refused("framework", "rails", f"{NOT_A_CHOICE}'rails' is not in", in_copier_words=True),
    refused("framework", "", f"{NOT_A_CHOICE}'' is not in", in_copier_words=True),
    # Copier validates an answer given as data even where the framework does not ask it.
    refused("app_target", "myapp.main", f'app_target "myapp.main" {NOT_TARGET}'),
    refused(
        "app_target",
        "myapp.main:app; import os",
        f'app_target "myapp.main:app; import os" {NOT_TARGET}',
    ),
    refused("app_target", "myapp.main:app\n", f'app_target "myapp.main:app\\n" {NOT_TARGET}'),
    refused(
        "app_target", "myapp.class:app", 'app_target "myapp.class:app" contains a Python keyword'
    ),
    refused("settings_module", "myapp/settings", f'settings_module "myapp/settings" {NOT_DOTTED}'),
    refused(
        "settings_module", "myapp.settings\n", f'settings_module "myapp.settings\\n" {NOT_DOTTED}'
    ),
    refused(
        "module",
        "os",
        "module is derived from package_dir (myapp.demo_traffic) and cannot be set: "
        "leave it out of --data.",
    ),
]


@pytest.mark.parametrize(("answers", "reason"), BAD_ANSWERS)
def test_bad_answer_is_refused_in_one_line_and_nothing_is_written(
    template_dir: Path, tmp_path: Path, answers: dict[str, Any], reason: str
) -> None:
    project = user_project(tmp_path / "project")
    before = files_in(project)

    with pytest.raises(ValueError) as refused:
        copy(template_dir, project, **answers)

    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(reason)  # the whole line, or all of it a list of choices leaves
    assert files_in(project) == before


# --- Free text never becomes code -------------------------------------------------------

INJECTIONS = (
    'x"; import os; os.system("touch pwned"); "',
    "x'''\nimport os\n'''",
    'x"""\nimport os\n"""',
    "x\\",
    "{{ 7 * 7 }}",
    "{% raw %}",
    "}}{{",
    "__import__('os').system('touch pwned')",
    "myapp\nimport os",
    "myapp.main:app\nimport os",
    "myapp # comment",
    "\x00",
    "\u2028",
)


def identifiers(max_size: int = 8) -> st.SearchStrategy[str]:
    return st.from_regex(rf"\A[A-Za-z_][A-Za-z0-9_]{{0,{max_size}}}\Z")


FREE_TEXT: dict[str, st.SearchStrategy[str]] = {
    "app_name": identifiers(),
    "package_dir": st.builds(
        lambda prefix, parts, slash: prefix + "/".join(["myapp", *parts]) + slash,
        st.sampled_from(["", "src/"]),
        st.lists(identifiers(4), max_size=2),
        st.sampled_from(["", "/"]),
    ),
    "app_target": st.builds(
        lambda module, attribute, call: f"myapp.{module}:{attribute}{call}",
        identifiers(),
        identifiers(),
        st.sampled_from(["", "()"]),
    ),
    "settings_module": st.builds(lambda name: f"myapp.{name}", identifiers()),
    "module": st.just("myapp.demo_traffic"),
}


def shape(source: str) -> list[str]:
    """What the code does, without its words: every string and name blanked.

    Statements are compared as a sorted list, so imports sorted by a user's module name
    still match; a statement, call or operator an answer smuggled in would not.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
        elif isinstance(node, ast.Name):
            node.id = "_"
        elif isinstance(node, ast.Attribute):
            node.attr = "_"
        elif isinstance(node, ast.alias):
            node.name, node.asname = "_", node.asname and "_"
        elif isinstance(node, ast.ImportFrom):
            node.module = "_"
    return sorted(ast.dump(statement) for statement in tree.body)


def assignments(source: str) -> dict[str, Any]:
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in {"APP_NAME", "MODULE"}
    }


def fresh_directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="demo-traffic-property-") as name:
        yield Path(name)


def framework_using(question: str) -> str:
    """A framework whose rendered files contain this answer, if the template has one yet."""
    wanted = {"app_target": "fastapi", "settings_module": "django"}.get(question, "standalone")
    config = (REPO / "copier.yml").read_text(encoding="utf-8")
    return wanted if f": {wanted}\n" in config else "standalone"


def canonical(question: str, answer: str) -> str:
    """A plain answer of the same form, to render the code the answer must not change."""
    if question == "app_target":
        return "myapp.main:create_app()" if answer.endswith("()") else "myapp.main:app"
    return {"package_dir": "myapp", "settings_module": "myapp.settings"}.get(question, "myapp")


def rendered_python(project: Path) -> dict[str, str]:
    """Every Python file written, by file name, and its source."""
    return {
        Path(name).name: content.decode()
        for name, content in files_in(project).items()
        if name.endswith(".py")
    }


@pytest.mark.parametrize("question", FREE_TEXT)
def test_free_text_is_refused_or_stays_inside_string_literals(
    template_dir: Path, question: str
) -> None:
    framework = framework_using(question)
    answers_strategy = st.one_of(
        st.text(max_size=24), FREE_TEXT[question], st.sampled_from(INJECTIONS)
    )
    expected: dict[str, dict[str, list[str]]] = {}

    def plain_shapes(answer: str) -> dict[str, list[str]]:
        plain = canonical(question, answer)
        if plain not in expected:
            with contextmanager(fresh_directory)() as project:
                data = {} if question == "module" else {question: plain}
                copy(template_dir, project, framework=framework, **data)
                expected[plain] = {
                    name: shape(source) for name, source in rendered_python(project).items()
                }
        return expected[plain]

    @settings(max_examples=15, deadline=None, database=None)
    @given(answer=answers_strategy)
    def refused_or_inert(answer: str) -> None:
        with contextmanager(fresh_directory)() as project:
            try:
                copy(template_dir, project, framework=framework, **{question: answer})
            except ValueError as refused:
                message = str(refused)
                assert message.startswith(f"Validation error for question '{question}': ")
                assert "\n" not in message
                assert files_in(project) == {}
                return
            app_name = answer if question == "app_name" else "myapp"
            package = answer.rstrip("/") if question == "package_dir" else app_name
            written = set(files_in(project)) - {ANSWERS}
            assert all(name.startswith(f"{package}/") and name.endswith(".py") for name in written)
            sources = rendered_python(project)
            assert assignments(sources["demo_traffic.py"]) == {
                "APP_NAME": app_name,
                "MODULE": package.removeprefix("src/").replace("/", ".") + ".demo_traffic",
            }
            assert {name: shape(source) for name, source in sources.items()} == plain_shapes(answer)

    refused_or_inert()
