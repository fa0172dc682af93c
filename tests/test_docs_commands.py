"""The README's and the docs' commands and snippets stay true: every `python -m module` / `python script.py` /
`accelerate launch script.py` command names a module or script that exists and flags that its `--help` lists, every
`pip install` extra exists, and every Python snippet parses and imports only names that exist."""

import ast
import importlib
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers.processes import run_command

REPOSITORY = Path(__file__).resolve().parents[1]
PAGES = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(languages: set[str]) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for match in FENCE.finditer(page.read_text(encoding="utf-8")):
            if match.group(1) in languages:
                found.append((page.relative_to(REPOSITORY).as_posix(), match.group(2)))
    return found


def shell_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) for each command of the shell blocks; continuation lines joined, `&&` chains split, comments
    and environment assignments dropped."""
    commands = []
    for page, text in blocks({"bash", "sh", "shell", "console"}):
        for line in text.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            for part in line.split("&&"):
                try:
                    argv = shlex.split(part.strip())
                except ValueError:  # a quoted JSON body spread over lines (curl -d '...'): not a project command
                    argv = part.split()
                while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
                    argv = argv[1:]
                if argv:
                    commands.append((page, argv))
    return commands


def python_target(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """(how to run it, its arguments) for python / accelerate commands of this project, else None."""
    if argv[0] in ("python", "python3") and len(argv) > 1:
        if argv[1] == "-m" and argv[2].startswith("clip2video."):
            return ["-m", argv[2]], argv[3:]
        if argv[1].endswith(".py"):
            return [argv[1]], argv[2:]
    if argv[:2] == ["accelerate", "launch"]:
        rest = argv[2:]
        for index, token in enumerate(rest):
            if token.endswith(".py"):
                return [token], rest[index + 1 :]
            if token == "-m":
                return ["-m", rest[index + 1]], rest[index + 2 :]
    return None


def help_texts(targets: list[tuple[str, ...]], directory: Path) -> dict[tuple[str, ...], dict]:
    """Each target's `python <target> --help` result, from one interpreter that forks per target
    (`tests/scripts/help_texts.py`): a fresh interpreter per command would import torch and transformers again."""
    output = directory / "help_texts.json"
    run_command(
        [sys.executable, "-m", "tests.scripts.help_texts", output, json.dumps([list(t) for t in targets])],
        cwd=REPOSITORY, timeout=600,
    )
    return dict(zip(targets, json.loads(output.read_text(encoding="utf-8"))))


COMMANDS = [(page, argv) for page, argv in shell_commands() if python_target(argv)]
PUBLISHED_FILES = {"/repository/serve.py": "pipelines/publishing/endpoint/serve.py"}


def documented_target(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    target, arguments = python_target(argv)
    # A published folder's file, documented at its path inside the container, is this file of the repository.
    return tuple(PUBLISHED_FILES.get(token, token) for token in target), arguments


def subcommand(listed: str, arguments: list[str]) -> bool:
    """Whether the command's first argument is one of the subcommands its help lists (`publishing convert ...`)."""
    return bool(arguments) and re.search(rf"\{{[^}}]*\b{re.escape(arguments[0])}\b[^}}]*\}}", listed) is not None


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[tuple[str, ...], dict]:
    targets = sorted({documented_target(argv)[0] for _, argv in COMMANDS})
    texts = help_texts(targets, tmp_path_factory.mktemp("help"))
    subcommands = set()
    for _, argv in COMMANDS:
        target, arguments = documented_target(argv)
        if texts[target]["code"] == 0 and subcommand(texts[target]["stdout"], arguments):
            subcommands.add((*target, arguments[0]))
    if subcommands:
        texts.update(help_texts(sorted(subcommands), tmp_path_factory.mktemp("help")))
    return texts


def help_text(helps: dict, target: tuple[str, ...]) -> str:
    result = helps[target]
    assert result["code"] == 0, f"`python {' '.join(target)} --help` failed:\n{result['stderr'][-2000:]}"
    return result["stdout"]


@pytest.mark.slow
@pytest.mark.parametrize("page, argv", COMMANDS, ids=[f"{page}:{' '.join(argv)[:60]}" for page, argv in COMMANDS])
def test_documented_command_exists_with_its_flags(page, argv, helps):
    target, arguments = documented_target(argv)
    if target[0] == "-m":
        assert importlib.util.find_spec(target[1]) is not None, f"{page}: no module {target[1]}"
    else:
        assert (REPOSITORY / target[0]).is_file(), f"{page}: no script {target[0]}"
    listed = help_text(helps, target)
    if subcommand(listed, arguments):
        target, arguments = (*target, arguments[0]), arguments[1:]
        listed = help_text(helps, target)
    for flag in (token.split("=", 1)[0] for token in arguments if token.startswith("--")):
        assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", listed), f"{page}: {' '.join(argv)}: {flag} is not an option"


def test_documented_pip_extras_exist():
    extras = set(tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for page, argv in shell_commands():
        if argv[:2] == ["pip", "install"]:
            for token in argv[2:]:
                for extra in re.findall(r"\[([^\]]+)\]", token):
                    assert set(extra.split(",")) <= extras, f"{page}: {' '.join(argv)} names an unknown extra"


SNIPPETS = blocks({"python", "py"})


@pytest.mark.parametrize("page, code", SNIPPETS, ids=[f"{page}:{i}" for i, (page, _) in enumerate(SNIPPETS)])
def test_documented_python_parses_and_its_project_imports_exist(page, code):
    lines = [line for line in code.splitlines() if not line.lstrip().startswith(">>>")] or code.splitlines()
    tree = ast.parse("\n".join(lines), filename=page)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "clip2video":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"{page}: `from {node.module} import {alias.name}`: no such name"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "clip2video":
                    importlib.import_module(alias.name)


def test_the_pages_name_test_files_that_exist():
    # Test files move as the code moves: a page that names one (a `pytest tests/...` command, a mention) must follow.
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\btests/[\w/]+\.py\b", text):
            assert (REPOSITORY / target).is_file(), f"{page.name} names {target}, which does not exist"
        for name in re.findall(r"(?<![\w/])test_\w+\.py\b", text):  # a test file named without its folder
            assert (REPOSITORY / "tests" / name).is_file(), f"{page.name} names {name}, which is not in tests/"


def test_the_pages_link_to_pages_that_exist():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).is_file(), f"{page.name} links to {target}, which does not exist"
