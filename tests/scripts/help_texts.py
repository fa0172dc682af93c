"""The `--help` text of several of the project's commands from one interpreter, for `test_docs_commands.py`.

    python -m tests.scripts.help_texts OUT.json '[["-m", "clip2video.training.run"], ["apps/demo/app.py"], ...]'

Writes to OUT.json a list with, for each command, `{"code": <exit status>, "stdout": ..., "stderr": ...}`. Each command
runs as `python <command> --help` would (as `__main__`, its `sys.argv`, a script's folder first on `sys.path`), in
its own process forked from this one after torch, transformers, accelerate and datasets are imported: a fresh
interpreter per command would import them again (about 10 CPU seconds each on a 2-core CI machine), and a fork keeps
one command's module-level state out of the next.
"""

import contextlib
import io
import json
import os
import runpy
import sys
import traceback


def _help_in_child(command: list[str], write_end: int) -> None:
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                if command[0] == "-m":
                    sys.argv = [command[1], *command[2:], "--help"]
                    runpy.run_module(command[1], run_name="__main__", alter_sys=True)
                else:
                    script = os.path.abspath(command[0])
                    sys.argv = [script, *command[1:], "--help"]
                    sys.path.insert(0, os.path.dirname(script))
                    runpy.run_path(script, run_name="__main__")
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
                if not isinstance(exit.code, (int, type(None))):
                    print(exit.code, file=sys.stderr)
            else:
                code = 0
    except BaseException:
        code = 1
        stderr.write(traceback.format_exc())
    with os.fdopen(write_end, "w", encoding="utf-8") as pipe:
        json.dump({"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}, pipe)
    os._exit(0)


def help_text(command: list[str]) -> dict:
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _help_in_child(command, write_end)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not text:
        return {"code": os.waitstatus_to_exitcode(status) or 1, "stdout": "", "stderr": "the command's process died"}
    return json.loads(text)


def main() -> None:
    output, commands = sys.argv[1], json.loads(sys.argv[2])
    # What nearly every command imports: once here, inherited by each fork.
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import CLIPModel  # noqa: F401

    results = [help_text(command) for command in commands]
    with open(output, "w", encoding="utf-8") as file:
        json.dump(results, file)


if __name__ == "__main__":
    main()
