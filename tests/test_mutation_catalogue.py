"""The mutation campaign's catalogue stays in step with the code it mutates: moving a function or renaming a test
file must not silently turn mutants into no-ops or leave a module with no tests to catch them."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("mutation_testing", REPO / "tools" / "mutation_testing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutant_finds_its_snippet_exactly_once_in_the_working_tree():
    tool = load_tool()
    missing = []
    for mutant in tool.MUTANTS:
        source = (REPO / mutant.path).read_text()
        originals = mutant.original if isinstance(mutant.original, tuple) else (mutant.original,)
        if not any(source.count(original) == 1 for original in originals):
            missing.append(f"{mutant.name}: not found once in {mutant.path}")
    assert not missing, "\n".join(missing)


def test_every_mutated_module_has_existing_tests():
    tool = load_tool()
    for path in {mutant.path for mutant in tool.MUTANTS}:
        tests = tool.TESTS_OF.get(path)
        assert tests, f"{path} is mutated but TESTS_OF names no tests for it"
        absent = [test for test in tests if not (REPO / test).is_file()]
        assert not absent, f"TESTS_OF[{path!r}] names missing files: {absent}"
