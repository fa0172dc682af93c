"""Fresh processes: code run where this repository cannot be imported (as users load published folders), the
training script and the project's modules run as users run them, and the launchers next to this interpreter."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import fork_server

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "training" / "run.py"


def run_isolated(code: str, cwd, timeout=300) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh process where this repository's packages cannot be imported (even when installed
    in editable mode, and by their folder names), with a private Hugging Face cache (`cwd/hf_home`) and no network:
    what a user who loads a published folder with remote code has. (A child of `fork_server`'s base server: only
    torch and what transformers sits on are imported before, never this repository or a Hugging Face library.)"""
    names = ("clip2video", "modeling_clip2video", "processing", "training", "pipelines", "apps")
    blocker = f"import sys\nfor _name in {names!r}:\n    sys.modules[_name] = None\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(cwd / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = run_command([sys.executable, "-c", blocker + textwrap.dedent(code)], cwd=cwd, env=env, timeout=timeout,
                         check=False)
    if result.returncode != 0:
        raise AssertionError(f"isolated process failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    return result


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment with `changes` applied: a value None removes the variable."""
    result = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def launcher(name: str) -> str:
    """The path of a console script installed with this interpreter (`accelerate`, `torchrun`), else on PATH."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert found, f"`{name}` is not installed"
    return found


def accelerate_launch(num_processes: int, port: int) -> list[str]:
    """The command line that starts a script on `num_processes` CPU processes forming one gloo group: on a machine
    without a GPU `--multi_gpu` is what makes accelerate start them (`--cpu` starts one process)."""
    return [
        launcher("accelerate"), "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
        "--mixed_precision", "no", "--main_process_port", str(port),
    ]


def run_command(command: list, cwd=REPO, env: dict[str, str] | None = None, timeout: int = 600,
                check: bool = True, fresh: bool = False) -> subprocess.CompletedProcess:
    """Runs `command` (its items turned to strings), captures its output, and with `check` asserts it succeeded,
    showing the end of its output otherwise. A Python command (`python script | -m module | -c code`) runs in a
    child of `helpers.fork_server`, which has the heavy libraries imported already, unless `fresh`: then, as every
    other command, in a fresh process."""
    command = [str(item) for item in command]
    result = None if fresh else fork_server.run(command, cwd=cwd, env=env, timeout=timeout)
    if result is None:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def start_process(command: list, cwd=None, env: dict[str, str] | None = None, stdin=None, stdout=None, stderr=None,
                  start_new_session: bool = False):
    """`subprocess.Popen(command, ...)` with these arguments; a Python command runs in a child of
    `helpers.fork_server` (a `fork_server.Served`, with Popen's `pid`, `poll`, `wait`, `send_signal` and `kill`)."""
    command = [str(item) for item in command]
    arguments = dict(cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=start_new_session)
    return fork_server.popen(command, **arguments) or subprocess.Popen(command, **arguments)


def run_training(*arguments, cwd: Path, launch: list[str] | None = None, env: dict[str, str] | None = None,
                 timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    """`python training/run.py *arguments` in `cwd` (or `launch + [training/run.py, *arguments]`, e.g. with
    `accelerate_launch(2, port)`), with `env`; by default this environment with one CPU thread per process (the
    tests share the machine's cores). `--cpu_threads` is passed first as the environment's `OMP_NUM_THREADS` (1 by
    default; a test's own `--cpu_threads` comes later and wins): run.py's `auto` ignores `OMP_NUM_THREADS` and takes
    every core, which costs a tiny run 37 CPU s instead of 21 when another test holds the other core."""
    variables = env or environment(OMP_NUM_THREADS="1")
    threads = ["--cpu_threads", variables.get("OMP_NUM_THREADS") or "1"]
    command = [*(launch or [sys.executable]), RUN, *threads, *arguments]
    return run_command(command, cwd=cwd, env=variables, timeout=timeout, check=check)


def run_module(module: str, *arguments, prelude: str = "", launch: list[str] | None = None,
               env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m module *arguments` from the repository's root, offline (or `launch + ["-m", module, ...]`, e.g.
    with `accelerate_launch(2, port)`); with `prelude`, that code runs first in the same process (to plant a fault)
    and the module is then run as `__main__`. `env` adds or replaces variables."""
    if prelude:
        code = f"import sys, runpy\n{prelude}\nsys.argv = [{module!r}, *sys.argv[1:]]\nrunpy.run_module({module!r}, run_name='__main__')"
        command = [*(launch or [sys.executable]), "-c", code, *arguments]
    else:
        command = [*(launch or [sys.executable]), "-m", module, *arguments]
    # The root first; a path already there (the mutation-testing harness's copy of the package) stays after it.
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    variables = environment(HF_HUB_OFFLINE="1", PYTHONPATH=python_path, **(env or {}))
    return run_command(command, cwd=REPO, env=variables, check=check)


def run_forked_until_killed(action, kill_after: int | None, count_file: Path,
                            operations=("replace", "rename", "unlink", "rmdir", "mkdir", "fsync")) -> int:
    """Runs `action()` in a forked process killed (`os._exit(9)`: no cleanup, no `finally`) right after its
    `kill_after`-th file system operation: a call of one of the `os` functions named in `operations`, or an `open`
    for writing. Returns the number of operations it made (`kill_after` None; written to `count_file` by the child),
    -1 when it was killed, 0 when it ended before the `kill_after`-th."""
    import builtins
    import io

    pid = os.fork()
    if pid == 0:
        try:
            made = [0]

            def counted(function):
                def wrapper(*args, **kwargs):
                    result = function(*args, **kwargs)
                    made[0] += 1
                    if made[0] == kill_after:
                        os._exit(9)
                    return result

                return wrapper

            def counted_open(function):
                counted_function = counted(function)

                def wrapper(file, mode="r", *args, **kwargs):
                    writes = any(flag in mode for flag in "wax+")
                    return (counted_function if writes else function)(file, mode, *args, **kwargs)

                return wrapper

            for name in operations:
                setattr(os, name, counted(getattr(os, name)))
            io.open = builtins.open = counted_open(io.open)
            action()
            count_file.write_text(str(made[0])) if kill_after is None else None
            os._exit(0)
        except BaseException:  # noqa: BLE001 - a child never returns into pytest
            import traceback

            traceback.print_exc()
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 9), f"the forked process failed (exit {code})"
    return int(count_file.read_text()) if code == 0 and kill_after is None else (-1 if code == 9 else 0)


def in_two_gloo_processes(function) -> None:
    """Runs `function` in two processes forked from this one that form one gloo group on the CPU (accelerate's debug
    launcher), on a free loopback port: the launcher's fixed 29500 may be taken by another test or run. A failure
    in either process fails the call. Each process starts with accelerate's state unset: a fork copies the
    one-process state an earlier test may have built here, with which an `Accelerator` would see one process."""
    import functools
    import tempfile

    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    from tests.helpers.servers import free_port

    with tempfile.NamedTemporaryFile() as rendezvous, patch_environment(
        world_size=2, master_addr="127.0.0.1", master_port=str(free_port()), accelerate_mixed_precision="no",
        accelerate_debug_rdv_file=rendezvous.name, accelerate_use_cpu="yes", gloo_socket_ifname="lo",
    ):
        start_processes(PrepareForLaunch(functools.partial(_with_unset_accelerate_state, function), debug=True),
                        nprocs=2, start_method="fork")


def _with_unset_accelerate_state(function) -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    function()
