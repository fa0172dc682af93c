"""A fork server for the tests' child interpreters: `python script.py`, `python -m module` and `python -c code` run in a
process forked from an interpreter that has already imported torch, transformers, accelerate and datasets.

Why: the suite starts over a hundred child interpreters (the training script, the indexer, the converter, as users
run them), and each one spent about 10 CPU seconds of its 12 importing those libraries on this machine's CPU (measured
in docs/testing.md, "How long the suite takes"): most of the suite's time. The child is still a process of its own
running the unchanged script as `__main__`, with the command's arguments, environment, working directory and standard
streams, exiting with the script's code after the interpreter's normal shutdown (atexit handlers, non-daemon threads);
only the libraries' import work is shared, as multiprocessing's "forkserver" start method shares it.

What a fresh interpreter has and a forked one would not, and how it is kept:
- Environment variables read when a library is imported (huggingface_hub's HF_HOME, HF_HUB_OFFLINE, transformers'
  HF_MODULES_CACHE, ...): a server is started with the environment it serves. A "libraries" server (transformers &
  co. imported) serves only commands with exactly its environment (PYTEST_CURRENT_TEST aside, which pytest changes
  per test); a "base" server (only what those libraries sit on) also serves other Hugging Face variables and
  another PYTHONPATH, whose children import the Hugging Face libraries themselves (`PRELOAD`). An environment gets
  its libraries server the second time it comes; the first time (most tests' own HF_HOME comes once) it is served
  by the base server.
- Random state: numpy's global generator is reseeded from the OS in each child (Python's `random` reseeds itself at
  fork). The string hash seed is the server's, so an order that depends on it does not vary between its children:
  tests of run-to-run determinism start fresh interpreters (`fresh=True` in `processes.run_command`).
- Threads: a fork copies only the calling thread, so the server refuses to serve (and every command falls back to a
  fresh interpreter) if importing the libraries started a Python thread. Native pools started at import (OpenBLAS's,
  for numpy's and scipy's copies, and pyarrow's jemalloc background thread) stop or lock around a fork in their own
  `pthread_atfork` handlers: the state every DataLoader worker is forked from.
`CLIP2VIDEO_TESTS_FRESH_INTERPRETERS=1` turns the server off: every child is then a fresh interpreter.

This file runs in two places: in the pytest process (`run` and `popen`, the client), and as the server (`python -c
<exec FILE> FILE SOCKET KIND`, started by the client), where `__name__` is `"__main__"`.
"""

import json
import os
import socket
import struct
import sys

# Two kinds of server. A "libraries" server has imported what the training script, the indexer and the converter
# import at the top, the heaviest part of their start (`from transformers import CLIPModel` alone is about 9 CPU s
# here); it serves one environment exactly. A "base" server has imported only what the Hugging Face libraries sit on
# (torch and the parts of it transformers pulls in, numpy, scipy, sympy, pyarrow, ...), none of which reads a Hugging
# Face variable, so it serves every environment that differs from its own only in those variables and PYTHONPATH: its
# children import transformers & co. themselves (about 4 CPU s) and see their own HF_HOME, HF_HUB_OFFLINE, ....
# Not pymilvus in either: gRPC, under it, supports a fork only with its own setting.
PRELOAD = {
    "libraries": (
        "numpy", "torch", "torchvision", "transformers", "transformers.models.clip.modeling_clip",
        "transformers.models.clip.tokenization_clip", "transformers.optimization",
        "transformers.video_processing_utils", "accelerate", "datasets", "evaluate", "safetensors.torch",
        "huggingface_hub", "av", "PIL.Image", "tqdm.auto",
    ),
    "base": (
        "numpy", "torch", "torch._dynamo", "torch.distributed.tensor", "torch.fx.experimental.symbolic_shapes",
        "scipy.optimize", "sympy", "torchvision", "torchvision.transforms.v2", "PIL.Image", "av", "pyarrow", "pandas",
        "yaml", "regex", "safetensors.torch", "tqdm.auto",
    ),
}
# Libraries whose import reads Hugging Face variables: never in a base server.
_HUGGING_FACE = ("huggingface_hub", "transformers", "datasets", "accelerate", "evaluate", "tokenizers", "diffusers")
# Changed by pytest for every test and read by nobody at import: not part of any server's identity.
_NOT_IDENTITY = ("PYTEST_CURRENT_TEST",)
# Read at import only by the Hugging Face libraries (and PYTHONPATH, which a base server's child applies itself).
_NOT_BASE_IDENTITY = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_", "PYTHONPATH")
_HEADER = struct.Struct("!Q")


def _identity(env: dict[str, str], kind: str) -> tuple:
    ignored = _NOT_IDENTITY + (_NOT_BASE_IDENTITY if kind == "base" else ())
    return (kind, *sorted((name, value) for name, value in env.items() if not name.startswith(ignored)))


# ---------------------------------------------------------------------------------------------------------------------
# The server (runs as `__main__` of `python -c <exec FILE> FILE SOCKET KIND`)
# ---------------------------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent ends, so no server or child outlives the test run."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
    (length,) = _HEADER.unpack(header)
    body = bytearray()
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        body += chunk
    return json.loads(body), fds


def _become(request: dict, fds: list[int]) -> None:
    """In the forked child: take the command's streams, directory, environment and arguments, then run it as
    `__main__` and exit as the interpreter would. An exception propagates to the top and is printed by the
    interpreter, exit code 1, as in a fresh one."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    if request.get("new_session"):
        os.setsid()
    _die_with_parent()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["kind"] == "base":  # the server started without PYTHONPATH: its entries go where Python puts them
        python_path = [os.path.abspath(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
        sys.path[1:1] = python_path
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    import runpy
    import types

    mode, target, arguments = request["mode"], request["target"], request["arguments"]
    if mode == "module":
        sys.path[0] = os.getcwd()
        sys.argv = ["-m", *arguments]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        sys.exit(0)
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    if mode == "script":  # as Python 3.11 runs a script: `__file__` joined to the directory, `argv[0]` as given
        path = os.path.join(os.getcwd(), target)
        sys.path[0] = os.path.dirname(os.path.realpath(path))
        sys.argv = [target, *arguments]
        main.__file__, main.__cached__ = path, None
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")
    else:
        sys.path[0] = ""
        sys.argv = ["-c", *arguments]
        code = compile(target, "<string>", "exec")
    sys.modules["__main__"] = main
    exec(code, main.__dict__)
    sys.exit(0)


def _serve(path: str, kind: str) -> None:
    import gc
    import importlib
    import select
    import threading

    _die_with_parent()
    for name in PRELOAD[kind]:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if threading.active_count() != 1:
        sys.exit(f"fork server: importing the libraries started Python threads {threading.enumerate()}; not forking")
    if kind == "base" and any(name in sys.modules for name in _HUGGING_FACE):
        sys.exit(f"fork server: a base library imported one of {_HUGGING_FACE}; not forking")
    gc.freeze()  # the children's collections leave the libraries' objects alone (and their pages shared)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".binding")
    listener.listen(16)
    os.replace(path + ".binding", path)  # the client waits for this name: the server is ready once it exists
    waiting: dict[int, socket.socket] = {}
    while True:
        if select.select([listener], [], [], 0.05)[0]:
            connection, _ = listener.accept()
            try:
                request, fds = _receive(connection)
            except (OSError, ValueError, ConnectionError):
                connection.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for other in (listener, connection, *waiting.values()):
                    other.close()
                _become(request, fds)
            for fd in fds:
                os.close(fd)
            try:
                connection.sendall(b"%d\n" % pid)
            except OSError:
                pass
            waiting[pid] = connection
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = waiting.pop(pid, None)
            if connection is not None:
                try:
                    connection.sendall(b"%d\n" % os.waitstatus_to_exitcode(status))
                except OSError:
                    pass
                connection.close()


# ---------------------------------------------------------------------------------------------------------------------
# The client (the pytest process)
# ---------------------------------------------------------------------------------------------------------------------

_servers: dict[tuple, tuple] = {}  # identity -> (process, socket path)
_seen: set[tuple] = set()  # the libraries identities asked for once: a second time starts their server
_MAX_SERVERS = 3  # libraries servers, besides one base server per base identity


def enabled() -> bool:
    return os.environ.get("CLIP2VIDEO_TESTS_FRESH_INTERPRETERS", "").strip().lower() not in ("1", "true", "yes", "on")


def parse(command: list[str]) -> tuple[str, str, list[str]] | None:
    """`(mode, target, arguments)` for `[sys.executable, script | -m module | -c code, *arguments]`; None for any
    other command (a launcher, an interpreter option), which then runs as a fresh process."""
    if len(command) < 2 or command[0] != sys.executable:
        return None
    first = command[1]
    if first in ("-m", "-c"):
        if len(command) < 3:
            return None
        return ("module" if first == "-m" else "code"), command[2], command[3:]
    if first.startswith("-"):
        return None
    return "script", first, command[2:]


def _server(env: dict[str, str]) -> tuple[str, str] | None:
    """`(kind, socket)` of the server for `env`: its libraries server once this environment comes a second time
    (most are one test's own), else the base server; started (and the oldest libraries server stopped beyond
    `_MAX_SERVERS`) if needed. None when it cannot serve (it exited: its log says why)."""
    libraries = _identity(env, "libraries")
    if libraries in _servers or libraries in _seen:
        return _started(libraries)
    _seen.add(libraries)
    return _started(_identity(env, "base"))


def _started(identity: tuple) -> tuple[str, str] | None:
    import atexit
    import subprocess
    import tempfile
    import time

    kind = identity[0]
    known = _servers.get(identity)
    if known is not None:
        process, path = known
        return (kind, path) if process.poll() is None else None
    if kind == "libraries" and sum(other[0] == "libraries" for other in _servers) >= _MAX_SERVERS:
        _stop(next(other for other in _servers if other[0] == "libraries"))
    folder = tempfile.mkdtemp(prefix="clip2video-fork-server-")
    path = os.path.join(folder, "socket")
    # Started by path (not `-m`: the server must not put this repository on `sys.path` before its children set it).
    start = "import sys; exec(compile(open(sys.argv[1]).read(), sys.argv[1], 'exec'))"
    with open(os.path.join(folder, "log"), "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", start, __file__, path, kind], cwd=folder, env=dict(identity[1:]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    if not _servers:
        atexit.register(stop_all)
    _servers[identity] = (process, path)
    while not os.path.exists(path):
        if process.poll() is not None:
            return None
        time.sleep(0.02)
    return kind, path


def _stop(identity: tuple) -> None:
    import shutil

    process, path = _servers.pop(identity)
    process.kill()
    process.wait()
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def stop_all() -> None:
    for identity in list(_servers):
        _stop(identity)


class Served:
    """A child of the fork server, with the part of `subprocess.Popen`'s interface the tests use: `pid`, `args`,
    `returncode`, `poll`, `wait`, `send_signal`, `kill`, `terminate`."""

    def __init__(self, args: list[str], connection: socket.socket, log: str):
        self.args, self.returncode, self._connection, self._log, self._buffer = args, None, connection, log, b""
        self.pid = int(self._line(None))

    def _line(self, timeout: float | None) -> bytes | None:
        """The server's next line (a pid, then an exit status), waiting up to `timeout` (0: not at all)."""
        while b"\n" not in self._buffer:
            self._connection.settimeout(timeout)
            try:
                chunk = self._connection.recv(64)
            except (TimeoutError, BlockingIOError):
                return None
            if not chunk:
                raise RuntimeError(f"the fork server ended while running {self.args[:3]}: see {self._log}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def poll(self) -> int | None:
        return self.wait(0) if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        import subprocess

        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                if timeout == 0:
                    return None
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = int(line)
            self._connection.close()
        return self.returncode

    def send_signal(self, signal_number: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal_number)

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        import signal

        self.send_signal(signal.SIGTERM)


def popen(command: list[str], cwd=None, env: dict[str, str] | None = None, stdin=None, stdout=None, stderr=None,
          start_new_session: bool = False) -> Served | None:
    """Starts `command` like `subprocess.Popen` with these arguments, in a child of the fork server for `env`: each
    stream None (this process's own), `subprocess.DEVNULL`, `subprocess.STDOUT` (stderr only), a file descriptor or
    a file. None when the command, a stream (`PIPE`) or the environment cannot be served that way (the caller then
    starts a fresh interpreter)."""
    import subprocess

    cwd = os.path.abspath(os.fspath(cwd or os.getcwd()))
    parsed = parse(command)
    if parsed is None or not enabled() or subprocess.PIPE in (stdin, stdout, stderr) or stdin == subprocess.STDOUT:
        return None
    env = dict(os.environ if env is None else env)
    served = _server(env)
    if served is None:
        return None
    kind, path = served
    mode, target, arguments = parsed
    request = {"mode": mode, "target": target, "arguments": arguments, "env": env, "cwd": cwd, "kind": kind,
               "new_session": start_new_session}
    body = json.dumps(request).encode()
    with open(os.devnull, "r+b") as null:
        fds = []
        for number, stream in enumerate((stdin, stdout, stderr)):
            if stream is None:
                fds.append(number)
            elif stream == subprocess.DEVNULL:
                fds.append(null.fileno())
            elif stream == subprocess.STDOUT:
                fds.append(fds[1])
            else:
                fds.append(stream if isinstance(stream, int) else stream.fileno())
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(path)
        socket.send_fds(connection, [_HEADER.pack(len(body))], fds)
        connection.sendall(body)
    return Served([str(item) for item in command], connection, os.path.join(os.path.dirname(path), "log"))


def run(command: list[str], cwd, env: dict[str, str] | None, timeout: float):
    """Runs `command` like `subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout)`, in a child of the fork server for `env`; None when the command or the environment cannot be
    served that way (the caller then starts a fresh interpreter)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = popen(command, cwd, env, subprocess.DEVNULL, stdout, stderr)
        if process is None:
            return None
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise

        def text(file) -> str:
            file.seek(0)
            return file.read().decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")

        return subprocess.CompletedProcess(command, code, text(stdout), text(stderr))


if __name__ == "__main__":
    _serve(sys.argv[2], sys.argv[3])
