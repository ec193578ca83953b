"""Run the tritonserver bundled in the nvidia-pytriton wheel, on loopback only.

One implementation shared by scripts/setup_triton.sh (`triton install-backends`, `env`),
scripts/triton.sh (start/stop/status/run), scripts/run.sh (start/stop), the pytest fixture
in tests/conftest.py and the benchmarks (TritonServer). Stdlib only, so any python3 can
drive it; the venv's python is queried for the paths that matter (site-packages, LIBDIR,
version).
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

from . import REPO_ROOT, proc

DEFAULT_VENV = os.path.join(REPO_ROOT, ".venv")
DEFAULT_BACKEND_DIR = os.path.join(REPO_ROOT, ".cache", "triton", "backends")
DEFAULT_RUN_DIR = os.path.join(REPO_ROOT, ".cache", "triton", "run")
DEFAULT_MODEL_REPO = os.path.join(REPO_ROOT, "model_repository")
# The project's Rust backends: cargo builds target/release/libtriton_<name>.so, Triton loads
# <backend_dir>/<name>/libtriton_<name>.so for models whose config says backend: "<name>".
RUST_BACKENDS = ("box_embed", "preprocess")


def rust_backend_so(name: str) -> str:
    return os.path.join(REPO_ROOT, "target", "release", f"libtriton_{name}.so")


BACKEND_SO = rust_backend_so("box_embed")

# Lines that mean the server (or a backend inside it) crashed or panicked.
CRASH_PATTERNS = [
    re.compile(p) for p in (
        r"Signal \((?!15\)|2\))\d+\) received",  # 15/2 are our own stop requests
        r"Segmentation fault",
        r"\bAborted\b",
        r"core dumped",
        r"panicked at",
        r"terminate called",
        r"double free|corrupted (size|double-linked)",
        r"Stub process .* is not healthy",
    )
]


def venv_dir() -> str:
    return os.environ.get("TRITON_VENV", DEFAULT_VENV)


_INFO_CACHE: dict = {}


def python_info(venv: str | None = None) -> dict:
    """Version, LIBDIR and site-packages of the venv interpreter (which the stub must match)."""
    venv = venv or venv_dir()
    if venv not in _INFO_CACHE:
        py = os.path.join(venv, "bin", "python")
        if not os.path.exists(py):
            raise RuntimeError(f"no venv at {venv}: run scripts/setup_triton.sh first")
        code = ("import json,sys,sysconfig;print(json.dumps({'version':'%d.%d'%sys.version_info[:2],"
                "'libdir':sysconfig.get_config_var('LIBDIR'),'purelib':sysconfig.get_paths()['purelib']}))")
        out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True).stdout
        _INFO_CACHE[venv] = json.loads(out)
    return _INFO_CACHE[venv]


def wheel_paths(venv: str | None = None) -> dict:
    info = python_info(venv)
    base = os.path.join(info["purelib"], "pytriton", "tritonserver")
    paths = {
        "tritonserver": os.path.join(base, "bin", "tritonserver"),
        "python_backend": os.path.join(base, "backends", "python"),
        "stub": os.path.join(base, "python_backend_stubs", info["version"], "triton_python_backend_stub"),
        "libs": os.path.join(info["purelib"], "nvidia_pytriton.libs"),
    }
    for key, path in paths.items():
        if not os.path.exists(path):
            raise RuntimeError(f"{key} not found at {path}: is nvidia-pytriton==0.7.0 installed in {venv_dir()}?")
    return paths


def _install_file(src: str, dst: str, mode: int | None = None) -> bool:
    """Copy src to dst unless identical; via a temp name + rename, never in place.

    A running server may have dst mapped (dlopen); writing into it crashes that server,
    whereas rename leaves the old inode alive for it.
    """
    if os.path.exists(dst) and filecmp.cmp(src, dst, shallow=False):
        return False
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.tmp.{os.getpid()}"
    shutil.copyfile(src, tmp)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, dst)
    return True


def install_backends(backend_dir: str = DEFAULT_BACKEND_DIR, venv: str | None = None,
                     backend_so: str = BACKEND_SO) -> list[str]:
    """Assemble <backend_dir>/python (from the wheel) and <backend_dir>/<name> for every
    built Rust backend (`backend_so` overrides where box_embed's library comes from)."""
    wp = wheel_paths(venv)
    notes = []
    py_dir = os.path.join(backend_dir, "python")
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        if _install_file(os.path.join(wp["python_backend"], name), os.path.join(py_dir, name)):
            notes.append(f"installed python/{name}")
    if _install_file(wp["stub"], os.path.join(py_dir, "triton_python_backend_stub"), 0o755):
        notes.append("installed python/triton_python_backend_stub")
    for name in RUST_BACKENDS:
        src = backend_so if name == "box_embed" else rust_backend_so(name)
        lib = f"libtriton_{name}.so"
        if os.path.exists(src):
            if _install_file(src, os.path.join(backend_dir, name, lib)):
                notes.append(f"installed {name}/{lib}")
        else:
            notes.append(f"{name} backend not built ({src} missing): {name} models cannot load")
    return notes


def rust_backend_installed(name: str, backend_dir: str = DEFAULT_BACKEND_DIR) -> bool:
    return os.path.exists(os.path.join(backend_dir, name, f"libtriton_{name}.so"))


def box_embed_installed(backend_dir: str = DEFAULT_BACKEND_DIR) -> bool:
    return rust_backend_installed("box_embed", backend_dir)


def server_env(venv: str | None = None) -> dict:
    venv = venv or venv_dir()
    info = python_info(venv)
    env = dict(os.environ)
    # The venv interpreter's LIBDIR first: the stub embeds libpython and must not pick
    # up a system libpython of the same minor version.
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (info["libdir"], wheel_paths(venv)["libs"], os.environ.get("LD_LIBRARY_PATH")) if p)
    # The embedded interpreter finds its prefix (and so the venv site-packages) via PATH.
    env["PATH"] = os.pathsep.join([os.path.join(venv, "bin"), os.environ.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env


def list_models(model_repository: str) -> list[str]:
    return sorted(d for d in os.listdir(model_repository)
                  if os.path.exists(os.path.join(model_repository, d, "config.pbtxt")))


def crash_lines(log_path: str) -> list[str]:
    try:
        with open(log_path, errors="replace") as f:
            return [line.rstrip() for line in f if any(p.search(line) for p in CRASH_PATTERNS)]
    except FileNotFoundError:
        return []


def _ready(http_port: int) -> bool:
    return proc.http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready")


def _is_tritonserver(pid: int) -> bool:
    args = proc.cmdline(pid)
    return bool(args) and b"tritonserver" in args[0]


def stop_pid(pid: int, timeout: float = 20.0) -> str:
    """SIGTERM the server (its own process group leader), bounded wait, then SIGKILL the group
    (the server and its Python-backend stubs)."""
    if not proc.alive(pid):
        return "not running"
    if not _is_tritonserver(pid):
        raise RuntimeError(f"pid {pid} is not a tritonserver; refusing to signal it")
    return proc.terminate(pid, timeout, group=True)


class TritonServer(proc.ServerProcess):
    """One tritonserver process: start, wait until ready, stop; ports picked free unless given."""

    name = "tritonserver"

    def __init__(self, model_repository: str, models: list[str] | None = None, *,
                 http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, log_path: str | None = None,
                 backend_dir: str = DEFAULT_BACKEND_DIR, venv: str | None = None,
                 extra_args: list[str] | None = None):
        super().__init__()
        self.model_repository = os.path.abspath(model_repository)
        self.models = models if models is not None else list_models(self.model_repository)
        self.http_port = http_port or proc.free_port()
        self.grpc_port = grpc_port or proc.free_port()
        self.metrics_port = metrics_port or proc.free_port()
        self.log_path = log_path or os.path.join(DEFAULT_RUN_DIR, f"tritonserver-{self.http_port}.log")
        self.backend_dir = os.path.abspath(backend_dir)
        self.venv = venv or venv_dir()
        self.extra_args = extra_args or []

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        cmd = [
            wheel_paths(self.venv)["tritonserver"],
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in self.models],
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=5",
            # Python-backend shared memory regions are named per server: two servers on
            # one machine (tests + a dev server) must not share them.
            f"--backend-config=python,shm-region-prefix-name=tpb_{uuid.uuid4().hex[:12]}_",
        ]
        return cmd + self.extra_args

    def start(self, append_log: bool = False) -> "TritonServer":
        """Starts the server on this object's ports: after `stop()`, the same HTTP, gRPC and
        metrics ports again (a client pointed at them reconnects). `append_log` keeps the log
        of the previous run, so `crash_lines()` covers both."""
        if self.alive():
            raise RuntimeError(f"tritonserver pid {self.pid} is still running; stop it first")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self._spawn(self.command(), env=server_env(self.venv), cwd=REPO_ROOT, append_log=append_log)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        if not self._poll_until_ready(lambda: _ready(self.http_port), timeout, poll=0.2):
            raise RuntimeError(f"tritonserver not ready after {timeout}s; {self.log_note()}")

    def stop(self, timeout: float = 20.0) -> str:
        if self.pid is None:
            return "not started"
        result = stop_pid(self.pid, timeout)
        self._reap()
        return result

    def crash_lines(self) -> list[str]:
        return crash_lines(self.log_path)


# ---------------------------------------------------------------------------------------
# Command line: triton install-backends | env | start | run | stop | status

def _server_from_args(a: argparse.Namespace) -> TritonServer:
    models = a.models.split(",") if a.models else None
    repo = os.path.abspath(a.model_repository)
    if models is None:
        models = list_models(repo)
        for name in RUST_BACKENDS:
            if rust_backend_installed(name, a.backend_dir):
                continue
            skipped = [m for m in models if _backend_of(repo, m) == name]
            if skipped:
                print(f"warning: {name} backend not installed; not loading {', '.join(skipped)}",
                      file=sys.stderr)
            models = [m for m in models if m not in skipped]
    return TritonServer(repo, models, http_port=a.http_port, grpc_port=a.grpc_port,
                        metrics_port=a.metrics_port,
                        log_path=a.log or os.path.join(a.run_dir, "tritonserver.log"),
                        backend_dir=a.backend_dir)


def _backend_of(repo: str, model: str) -> str | None:
    with open(os.path.join(repo, model, "config.pbtxt")) as f:
        m = re.search(r'^\s*backend:\s*"([^"]+)"', f.read(), re.M)
    return m.group(1) if m else None


def _print_endpoints(s: TritonServer) -> None:
    print(f"tritonserver pid {s.pid} ready; models: {', '.join(s.models)}")
    print(f"  HTTP    {s.http_url}   (e.g. {s.http_url}/v2/models/box_embed/stats)")
    print(f"  gRPC    {s.grpc_address}")
    print(f"  metrics {s.metrics_url}")
    print(f"  log     {s.log_path}")


def _running_state(run_dir: str) -> dict | None:
    """The state file of the server our command line started, while that server runs."""
    state = proc.read_state(run_dir)
    if state is not None and proc.alive(state["pid"]) and _is_tritonserver(state["pid"]):
        return state
    return None


def _cmd_install_backends(a: argparse.Namespace) -> int:
    for note in install_backends(a.backend_dir):
        print(note)
    return 0


def _cmd_env(a: argparse.Namespace) -> int:
    env = server_env()
    print(f"venv:              {venv_dir()}")
    print(f"tritonserver:      {wheel_paths()['tritonserver']}")
    print(f"backend directory: {a.backend_dir}")
    print(f"LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']}")
    print(f"PATH={env['PATH']}")
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    state = _running_state(a.run_dir)
    if state is None:
        print("tritonserver: not running")
        return 3
    ready = _ready(state["http_port"])
    print(f"tritonserver pid {state['pid']} {'ready' if ready else 'NOT ready'}; "
          f"http 127.0.0.1:{state['http_port']} grpc 127.0.0.1:{state['grpc_port']} "
          f"metrics 127.0.0.1:{state['metrics_port']}; log {state['log']}")
    return 0 if ready else 1


def _cmd_stop(a: argparse.Namespace) -> int:
    state = proc.read_state(a.run_dir)
    if state is None:
        print("tritonserver: no state file, nothing to stop")
        return 0
    print(f"tritonserver pid {state['pid']}: {stop_pid(state['pid'])}")
    proc.remove_state(a.run_dir)
    return 0


def _start(a: argparse.Namespace) -> TritonServer | None:
    """Starts the server the arguments describe and waits until it is ready; None (after
    saying why) when one already runs or it does not come up."""
    state = _running_state(a.run_dir)
    if state is not None:
        print(f"tritonserver already running (pid {state['pid']}); stop it first", file=sys.stderr)
        return None
    server = _server_from_args(a)
    try:
        server.start()
        proc.write_state(a.run_dir, {"pid": server.pid, "http_port": server.http_port,
                                     "grpc_port": server.grpc_port, "metrics_port": server.metrics_port,
                                     "log": server.log_path})
        server.wait_ready(a.timeout)
    except (RuntimeError, KeyboardInterrupt) as e:
        server.stop()
        proc.remove_state(a.run_dir)
        print(e, file=sys.stderr)
        return None
    _print_endpoints(server)
    return server


def _cmd_start(a: argparse.Namespace) -> int:
    return 0 if _start(a) is not None else 1


def _cmd_run(a: argparse.Namespace) -> int:
    """In the foreground until Ctrl-C/SIGTERM or until the server dies."""
    # SIGTERM as Ctrl-C from the start: one arriving while the server comes up stops it too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = _start(a)
    if server is None:
        return 1
    print("Ctrl-C stops it.")
    try:
        while server.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    died = not server.alive()
    print(f"tritonserver: {'exited on its own' if died else server.stop()}")
    proc.remove_state(a.run_dir)
    return 1 if died else 0


def add_commands(sub) -> None:
    """`triton <command>`: one sub-parser per command, bound to its function."""
    group = sub.add_parser("triton", help="the tritonserver on loopback", description=__doc__.splitlines()[0])
    commands = group.add_subparsers(dest="cmd", required=True)
    table = [
        ("install-backends", _cmd_install_backends, "assemble .cache/triton/backends"),
        ("env", _cmd_env, "print the environment the server runs with"),
        ("start", _cmd_start, "start in the background"),
        ("run", _cmd_run, "run in the foreground until Ctrl-C"),
        ("stop", _cmd_stop, "stop the server `start` started (by pid)"),
        ("status", _cmd_status, "pid, readiness and ports of that server"),
    ]
    for name, func, help_text in table:
        p = commands.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        if name in ("start", "run"):
            p.add_argument("--model-repository", default=DEFAULT_MODEL_REPO)
            p.add_argument("--models", help="comma-separated; default: every model in the repository")
            p.add_argument("--http-port", type=int, default=int(os.environ.get("TRITON_HTTP_PORT", 8000)))
            p.add_argument("--grpc-port", type=int, default=int(os.environ.get("TRITON_GRPC_PORT", 8001)))
            p.add_argument("--metrics-port", type=int, default=int(os.environ.get("TRITON_METRICS_PORT", 8002)))
            p.add_argument("--log")
            p.add_argument("--timeout", type=float, default=120.0)
        p.add_argument("--backend-dir", default=DEFAULT_BACKEND_DIR)
        p.add_argument("--run-dir", default=DEFAULT_RUN_DIR)
