"""In-process runs of mutmut's mutants (`pytest -p tools.mutmut_inprocess`, inside mutmut's `mutants/` folder).

`mutmut run` starts the tests afresh for every mutant, so every session and module fixture (a tiny checkpoint saved,
a pipeline loaded, videos written) is built again per mutant: a minute or more per mutant on a loaded 2-core machine.
mutmut's trampolines choose the mutant at every call from `MUTANT_UNDER_TEST`, so one pytest session can run the
selected tests once unmutated (building the fixtures with the original code) and then again under each mutant.

    cd <export>/mutants
    MUTMUT_INPROCESS_MUTANTS=names.txt MUTMUT_INPROCESS_OUT=out.json OMP_NUM_THREADS=1 python -m pytest \
        -p tools.mutmut_aliases -p tools.mutmut_inprocess -p no:cacheprovider -m "not slow" -q \
        --tb=native --basetemp=/tmp/mm_mine_basetemp tests/test_x.py

`--tb=native`: pytest's default traceback parses the failing module with `ast` for every entry, and a mutated module
holds every mutant's copy of every function (tens of thousands of lines): minutes per killed mutant without it.
`--basetemp` of its own: pytest keeps only the three newest `/tmp/pytest-of-<user>/pytest-N` folders, so other pytest
runs on the machine delete a long run's fixtures (a tiny checkpoint gone mid-run reads as a kill). Deselect tests
that fail unmutated inside `mutants/` (a fresh interpreter started there does not see the aliases): the clean run
lists them in `clean_failures`, and every mutant reaching them would count as killed. Hypothesis shrinks a failing
example for a minute or more, where a kill needs only the first failure: add `-p tools.mutmut_noshrink`.
`python -m tools.mutmut_generate` writes the mutants without mutmut's baseline run of the tests.

`names.txt` holds mutmut's mutant names, one a line (`mutmut show` / `mutmut results` print them). Each mutant runs
the selected tests in order until one fails (killed) or none does (survived), and the results file is rewritten
as each mutant ends (a stopped run keeps what it did); a test that runs past
`MUTMUT_INPROCESS_TIMEOUT` seconds (default 120) is stopped by SIGALRM and counts as a kill (a hang). The unmutated
run comes first; a failure there makes the results invalid (`clean_failures` in the output).

Only for mutants of code that the session's fixtures do not keep results of: a mutant of a function that a module- or
session-scoped fixture calls (e.g. a constructor) is not active while that fixture is built, so only the tests that
call the function themselves can catch it. Use `mutmut run` for those. A mutant that changes process-wide state
(the environment, a module's globals, a cache) could also change the tests run after it; mutmut's own runs, one
process per mutant, are the reference.
"""

import json
import os
import signal
import time

import pytest


_NAMES = os.environ.get("MUTMUT_INPROCESS_MUTANTS")
_OUT = os.environ.get("MUTMUT_INPROCESS_OUT", "mutmut_inprocess.json")
_TIMEOUT = int(os.environ.get("MUTMUT_INPROCESS_TIMEOUT", "120"))
_results = {"clean_failures": [], "mutants": {}}


class MutantTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise MutantTimeout(f"test ran past {_TIMEOUT} s")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if not _NAMES:
        return
    names = [line.strip() for line in open(_NAMES) if line.strip()]
    clean = list(items)
    for name in names:
        _results["mutants"][name] = {"status": "survived", "tests_run": 0}
        for item in clean:
            copy = pytest.Function.from_parent(
                item.parent, name=item.name, callspec=getattr(item, "callspec", None), callobj=item.obj,
                fixtureinfo=item._fixtureinfo, originalname=item.originalname,
            )
            copy._mutmut_mutant = name
            items.append(copy)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _NAMES:
        yield
        return
    name = getattr(item, "_mutmut_mutant", "")
    entry = _results["mutants"].get(name)
    if entry is not None and entry["status"] != "survived":
        item.add_marker(pytest.mark.skip(reason="mutant already killed"))
    elif entry is not None:
        entry["tests_run"] += 1
    os.environ["MUTANT_UNDER_TEST"] = name
    started = time.monotonic()
    try:
        yield
    finally:
        os.environ["MUTANT_UNDER_TEST"] = ""
        if entry is not None:
            entry["seconds"] = entry.get("seconds", 0.0) + time.monotonic() - started
            if nextitem is None or getattr(nextitem, "_mutmut_mutant", "") != name:
                _write_results()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # Only around the test itself, where pytest reports an exception as the test's failure.
    if not _NAMES:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _NAMES:
        return
    report = outcome.get_result()
    if not report.failed:
        return
    name = getattr(item, "_mutmut_mutant", "")
    message = str(call.excinfo.value)[:300] if call.excinfo else ""
    if not name:
        _results["clean_failures"].append({"test": item.nodeid, "when": call.when, "message": message})
        return
    entry = _results["mutants"][name]
    if entry["status"] == "survived":
        timeout = call.excinfo is not None and call.excinfo.errisinstance(MutantTimeout)
        entry.update(status="timeout" if timeout else "killed", test=item.nodeid, when=call.when, message=message)


def _write_results():
    # Through a temporary file: a run stopped while writing leaves the previous complete file.
    with open(_OUT + ".tmp", "w") as file:
        json.dump(_results, file, indent=1)
    os.replace(_OUT + ".tmp", _OUT)


def pytest_sessionfinish(session, exitstatus):
    if _NAMES:
        _write_results()
