"""Conventions of the test suite itself that a reviewer would otherwise have to check by eye: every
`pytest.raises` names the message it expects (`match=`), so a refusal for the wrong reason (another argument, a
NumPy error instead of ours, an argparse error instead of the check under test) fails the test."""

import ast
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def raises_without_match(source: str) -> list[int]:
    """Line numbers of the `pytest.raises(...)` / `raises(...)` calls in `source` that pass no `match=`, both the
    context-manager form and the call form `pytest.raises(Error, function, *args)`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
        if name != "raises":
            continue
        if isinstance(function, ast.Attribute) and not (
            isinstance(function.value, ast.Name) and function.value.id == "pytest"
        ):
            continue
        if not any(keyword.arg == "match" for keyword in node.keywords):
            lines.append(node.lineno)
    return sorted(lines)


def test_every_pytest_raises_in_the_suite_names_its_message():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for line in raises_without_match(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(TESTS.parent)}:{line}")
    assert offenders == [], "pytest.raises without match= (name the expected message):\n" + "\n".join(offenders)


def test_the_scan_finds_each_form_of_a_raises_without_match():
    source = textwrap.dedent("""
        import pytest
        from pytest import raises

        def test_a():
            with pytest.raises(ValueError):  # 6: no match
                int("x")
            with pytest.raises(ValueError, match="invalid literal"):
                int("x")
            with pytest.raises(
                (TypeError, ValueError),
            ) as error:  # 10: no match, over several lines
                int("x")
            pytest.raises(ValueError, int, "x")  # 14: the call form
            with raises(KeyError):  # 15: imported bare
                {}["k"]
            with pytest.warns(UserWarning, match="w"), pytest.raises(KeyError, match="'k'"):
                {}["k"]
            with other.raises(ValueError):  # another object's raises: not pytest's
                pass
    """)
    assert raises_without_match(source) == [6, 10, 14, 15]
