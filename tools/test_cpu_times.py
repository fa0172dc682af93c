"""Opt-in pytest plugin: the CPU seconds each test costs, its own process and the child processes it waited for.

    OMP_NUM_THREADS=1 python -m pytest -m slow -p tools.test_cpu_times -q -p no:cacheprovider

Wall time grows with the machine's load (other processes take the cores); CPU time (user + system, from
`resource.getrusage` of this process and of its waited-for children, before and after each phase) barely does, so it
is the number to compare when the suite is trimmed. A module- or session-scoped fixture is charged to the test that
builds it. Works under pytest-xdist too: each worker measures its own tests and the numbers travel to the
controller in the reports' `user_properties`. Prints the slowest `CPU_TIMES_TOP` tests (60 by default) and the
total; `CPU_TIMES_JSON=path` also writes every test's seconds there.
"""

import json
import os
import resource

import pytest

_KEY = "cpu_s"


def _cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _charge(item, seconds):
    for index, (name, value) in enumerate(item.user_properties):
        if name == _KEY:
            item.user_properties[index] = (_KEY, value + seconds)
            return
    item.user_properties.append((_KEY, seconds))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    start = _cpu_seconds()
    yield
    _charge(item, _cpu_seconds() - start)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = _cpu_seconds()
    yield
    _charge(item, _cpu_seconds() - start)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    # The report of the teardown phase is made after this hook returns, so it carries all three phases.
    start = _cpu_seconds()
    yield
    _charge(item, _cpu_seconds() - start)


_times = {}


def pytest_runtest_logreport(report):
    if report.when != "teardown":
        return
    for name, value in report.user_properties:
        if name == _KEY:
            _times[report.nodeid] = value


def pytest_terminal_summary(terminalreporter):
    if not _times:
        return
    top = int(os.environ.get("CPU_TIMES_TOP", "60"))
    write = terminalreporter.write_line
    terminalreporter.section("CPU seconds per test (own process + waited-for children)")
    for nodeid, seconds in sorted(_times.items(), key=lambda pair: -pair[1])[:top]:
        write(f"{seconds:8.1f}  {nodeid}")
    write(f"{sum(_times.values()):8.1f}  total over {len(_times)} tests")
    path = os.environ.get("CPU_TIMES_JSON")
    if path:
        with open(path, "w") as handle:
            json.dump(_times, handle, indent=1, sort_keys=True)
