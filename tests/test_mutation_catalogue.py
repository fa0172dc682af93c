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
        planted = tool.mutated_text(source, mutant)
        if planted is None:
            missing.append(f"{mutant.name}: not found once in {mutant.path}, or its replacement does not compile")
        elif planted == source:
            missing.append(f"{mutant.name}: planting it changes nothing")
    assert not missing, "\n".join(missing)


def test_snippets_are_found_however_the_code_is_formatted():
    tool = load_tool()
    mutant = tool.Mutant(
        "example", "example.py", 'scores = logits.softmax(dim=-1) if mode == "softmax" else logits',
        'scores = logits.sigmoid() if mode == "softmax" else logits', "an example",
    )
    layouts = [
        'scores = logits.softmax(dim=-1) if mode == "softmax" else logits\n',
        "scores = logits.softmax(dim = -1) if mode == 'softmax' else logits\n",  # spacing, quotes
        'scores = logits.softmax(\n    dim=-1,\n) if mode == "softmax" else logits\n',  # wrapped, trailing comma
        'scores = logits.softmax(dim=-1) \\\n    if mode == "softmax" else logits\n',  # continuation
    ]
    for layout in layouts:
        source = f"def score(logits, mode):\n    {layout.replace(chr(10), chr(10) + '    ').rstrip()}\n    return scores\n"
        planted = tool.mutated_text(source, mutant)
        assert planted is not None and "sigmoid()" in planted and "softmax(" not in planted, layout
    # Names stay names: a longer name, another operator or a second occurrence is no match.
    for source in ('my_scores = logits.softmax(dim=-1) if mode == "softmax" else logits\n',
                   'scores = logits.softmax(dim=-2) if mode == "softmax" else logits\n',
                   'scores = logits.softmax(dim=-1) if mode != "softmax" else logits\n',
                   'scores = logits.softmax(dim=-1) if mode == "softmax" else logits\n' * 2):
        assert tool.mutated_text(source, mutant) is None, source


def test_a_multi_line_mutant_keeps_its_indentation_where_the_code_moved():
    tool = load_tool()
    mutant = tool.Mutant(
        "example", "example.py", "        if drift < 0:\n            drift = 0\n", "        if drift < -1:\n            drift = 0\n",
        "an example",
    )
    moved = "def f(drift):\n    for _ in range(2):\n        while True:\n            if drift < 0:\n                drift = 0\n            break\n    return drift\n"
    planted = tool.mutated_text(moved, mutant)
    assert planted == moved.replace("drift < 0", "drift < -1")


def test_every_mutated_module_has_existing_tests():
    tool = load_tool()
    for path in {mutant.path for mutant in tool.MUTANTS}:
        tests = tool.TESTS_OF.get(path)
        assert tests, f"{path} is mutated but TESTS_OF names no tests for it"
        absent = [test for test in tests if not (REPO / test).is_file()]
        assert not absent, f"TESTS_OF[{path!r}] names missing files: {absent}"
