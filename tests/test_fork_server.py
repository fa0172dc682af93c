"""`helpers.fork_server`: a command run in a child of the fork server sees what it would see in a fresh interpreter
(arguments, `sys.path[0]`, working directory, environment, `__main__`, exit code, output, random state), and a
command it cannot serve runs fresh. The tests of the training script and the indexer rely on it."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import fork_server
from tests.helpers.processes import environment, run_command, start_process

PROBE = textwrap.dedent(
    """
    import json, os, sys
    import numpy
    print(json.dumps({
        "argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "main": __name__,
        "file": globals().get("__file__"), "variable": os.environ.get("PROBE_VARIABLE"),
        "test": "PYTEST_CURRENT_TEST" in os.environ, "numpy": float(numpy.random.rand()),
        "main_module": sys.modules["__main__"].__dict__ is globals(),
    }))
    sys.stderr.write("to stderr\\n")
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
    """
)


def both(command: list, cwd, env) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    served = fork_server.run([str(item) for item in command], cwd=cwd, env=env, timeout=120)
    assert served is not None, "the fork server did not serve a plain Python command"
    fresh = run_command(command, cwd=cwd, env=env, check=False, fresh=True)
    return served, fresh


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A folder with `package/probe.py`: one folder for the module's tests, so that they share one server."""
    folder = tmp_path_factory.mktemp("probe")
    (folder / "package").mkdir()
    (folder / "package" / "__init__.py").write_text("")
    (folder / "package" / "probe.py").write_text(PROBE)
    return folder


@pytest.mark.parametrize("form", ["script", "module", "code"])
def test_a_served_command_sees_what_a_fresh_interpreter_sees(package, tmp_path, form):
    work = tmp_path / "work"
    (work / ".." / "package").mkdir(parents=True)
    (work / ".." / "package" / "probe.py").write_text(PROBE)
    env = environment(PROBE_VARIABLE="ünïcode value", PROBE_EXIT="7", PYTHONPATH=str(package))
    command = {
        "script": [sys.executable, "../package/probe.py", "a", "--b"],
        "module": [sys.executable, "-m", "package.probe", "a", "--b"],
        "code": [sys.executable, "-c", PROBE, "a", "--b"],
    }[form]
    served, fresh = both(command, work, env)
    assert (served.returncode, served.stderr) == (fresh.returncode, fresh.stderr) == (7, "to stderr\n")
    served_seen, fresh_seen = json.loads(served.stdout), json.loads(fresh.stdout)
    assert served_seen.pop("numpy") != fresh_seen.pop("numpy")
    assert served_seen == fresh_seen
    assert fresh_seen["variable"] == "ünïcode value" and fresh_seen["main"] == "__main__"
    assert fresh_seen["main_module"] is True
    assert fresh_seen["cwd"] == str(work)


def test_a_child_of_the_base_server_sees_its_own_hugging_face_variables_and_python_path(tmp_path):
    # Three environments that differ only in Hugging Face variables and PYTHONPATH: one base server serves them all,
    # and each child's huggingface_hub (imported by the child, never by that server) reads its own values.
    code = (
        "import json, os, sys\nimport huggingface_hub.constants as c, transformers\n"
        "print(json.dumps([c.HF_HOME, c.HF_HUB_OFFLINE, sys.path[1], 'transformers' in sys.modules]))"
    )
    for index in range(3):
        home, extra = tmp_path / f"home{index}", tmp_path / f"path{index}"
        offline = "1" if index % 2 else "0"
        env = environment(HF_HOME=str(home), HF_HUB_OFFLINE=offline, PYTHONPATH=str(extra))
        result = run_command([sys.executable, "-c", code], cwd=tmp_path, env=env)
        assert json.loads(result.stdout) == [str(home), offline == "1", str(extra), True]
    libraries = [identity for identity in fork_server._servers if identity[0] == "libraries"]
    assert not any(dict(identity[1:]).get("HF_HOME", "").startswith(str(tmp_path)) for identity in libraries)


def test_each_child_draws_its_own_numpy_numbers(tmp_path):
    draws = {
        run_command([sys.executable, "-c", "import numpy; print(numpy.random.rand())"], cwd=tmp_path).stdout
        for _ in range(3)
    }
    assert len(draws) == 3


def test_an_exception_exits_1_with_its_traceback_and_atexit_handlers_run(tmp_path):
    code = "import atexit\natexit.register(print, 'atexit ran')\nraise ValueError('named failure')"
    served, fresh = both([sys.executable, "-c", code], tmp_path, None)
    for result in (served, fresh):
        assert result.returncode == 1 and result.stdout == "atexit ran\n"
        assert result.stderr.splitlines()[-1] == "ValueError: named failure"


def test_a_timeout_kills_the_child_and_raises_as_subprocess_does(tmp_path):
    marker = tmp_path / "still running"
    code = f"import time\ntime.sleep(3)\nopen({str(marker)!r}, 'w').close()"
    with pytest.raises(subprocess.TimeoutExpired, match="timed out after 1 seconds"):
        run_command([sys.executable, "-c", code], cwd=tmp_path, timeout=1)
    time.sleep(4)
    assert not marker.exists()


def test_other_commands_and_the_switch_run_fresh(tmp_path, monkeypatch):
    assert fork_server.parse(["/bin/echo", "x"]) is None
    assert fork_server.parse([sys.executable, "-u", "script.py"]) is None
    assert fork_server.parse([sys.executable, "script.py", "-c"]) == ("script", "script.py", ["-c"])
    monkeypatch.setenv("CLIP2VIDEO_TESTS_FRESH_INTERPRETERS", "1")
    assert fork_server.run([sys.executable, "-c", "pass"], cwd=tmp_path, env=None, timeout=60) is None


def test_a_started_child_polls_waits_and_is_killed_as_a_popen_is(tmp_path):
    log = tmp_path / "log"
    code = "import sys, time\nprint('started', flush=True)\nprint('to stderr', file=sys.stderr, flush=True)\ntime.sleep(60)"
    with open(log, "wb") as output:
        served = start_process([sys.executable, "-c", code], cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)
    assert isinstance(served, fork_server.Served)
    deadline = time.monotonic() + 60
    while log.read_text() != "started\nto stderr\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.poll() is None and os.getsid(served.pid) == served.pid  # its own session, as asked
    with pytest.raises(subprocess.TimeoutExpired, match=r"timed out after 0.2 seconds"):
        served.wait(0.2)
    served.kill()
    assert served.wait(30) == -signal.SIGKILL == served.returncode == served.poll()
    quick = start_process([sys.executable, "-c", "raise SystemExit(5)"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    assert quick.wait(60) == 5
