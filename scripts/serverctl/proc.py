"""Process control shared by the triton and opensearch modules: free loopback ports, pid
checks, bounded stops and readiness waits, log tails, and the state file their command
lines keep; and the `wait-http` command (a bounded wait until a URL answers 200, for the
shell scripts).

Only processes we started are signalled, by pid: callers check a pid's command line
(`cmdline`) before `terminate` or `kill`. Every wait here is bounded.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable

# How often a stop polls whether the pid is gone.
STOP_POLL_S = 0.05


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the servers listen on loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 now: all held open until the last is picked,
    so the kernel cannot hand out one twice."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def log_tail(path: str, n: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def proc_status_kib(pid: int, field: str) -> int:
    """A KiB field of /proc/PID/status: VmRSS (resident now) or VmHWM (its peak since start)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def http_get(url: str, timeout: float) -> tuple[int, bytes] | None:
    """Status and body of a GET (error statuses included), or None when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """A GET of url answers 200."""
    response = http_get(url, timeout)
    return response is not None and response[0] == 200


def wait_until(ready: Callable[[], bool], timeout: float, poll: float,
               alive: Callable[[], bool] = lambda: True) -> bool:
    """True once ready() holds; False when timeout passes first or alive() turns false
    (checked before each try)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if ready():
            return True
        time.sleep(poll)
    return False


def cmdline(pid: int) -> list[bytes]:
    """The pid's command line, one item an argument; [] when it cannot be read (gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(STOP_POLL_S)
    return not alive(pid)


def kill(pid: int, *, group: bool = False, timeout: float = 5.0) -> str:
    """SIGKILL the pid (with group, its process group: a server started by ServerProcess leads
    its own), then wait up to timeout for it to go."""
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except ProcessLookupError:  # it exited since the caller looked
        pass
    _wait_gone(pid, timeout)
    return "killed"


def terminate(pid: int, timeout: float, *, group: bool = False) -> str:
    """SIGTERM (both servers shut down cleanly on it), wait up to timeout, then `kill`."""
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return "stopped"
    return kill(pid, group=group)


class ServerProcess:
    """What TritonServer and OpenSearchNode share: a process we start (or whose pid a state
    file gave us), its console log at self.log_path, and a bounded wait until it is ready."""

    name: str  # the server's name in messages, set by each subclass

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    def _spawn(self, cmd: list[str], *, env: dict, cwd: str, append_log: bool = False, **popen_args) -> None:
        # A session of its own: a Ctrl-C at the caller's terminal does not reach the server,
        # and the server leads a process group that a stop can kill whole.
        with open(self.log_path, "ab" if append_log else "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=cwd, start_new_session=True, **popen_args)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and alive(self.pid)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_note(self) -> str:
        """The log's path and its last lines, for an error message."""
        return f"log {self.log_path}:\n{log_tail(self.log_path)}"

    def _reap(self) -> None:
        """After a stop: collect our child's exit status, so it is not left a zombie."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def _poll_until_ready(self, ready: Callable[[], bool], timeout: float, poll: float) -> bool:
        """True once ready() holds, False when timeout passes first; raises if the server exits."""
        if wait_until(ready, timeout, poll, self.alive):
            return True
        if not self.alive():
            raise RuntimeError(f"{self.name} exited during startup (code {self.returncode()}); "
                               f"{self.log_note()}")
        return False


# The command lines keep the pid and ports of the server they started in <dir>/state.json.

def _state_path(state_dir: str) -> str:
    return os.path.join(state_dir, "state.json")


def read_state(state_dir: str) -> dict | None:
    try:
        with open(_state_path(state_dir)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(state_dir: str, state: dict) -> None:
    os.makedirs(state_dir, exist_ok=True)
    with open(_state_path(state_dir), "w") as f:
        json.dump(state, f)


def remove_state(state_dir: str) -> None:
    try:
        os.remove(_state_path(state_dir))
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------
# Command line: wait-http

def _wait_http(a: argparse.Namespace) -> int:
    pid_alive = (lambda: alive(a.pid)) if a.pid else (lambda: True)
    if wait_until(lambda: http_ok(a.url, timeout=5.0), a.timeout, poll=0.5, alive=pid_alive):
        return 0
    if not pid_alive():
        print(f"wait-http: pid {a.pid} exited before {a.url} answered 200", file=sys.stderr)
    else:
        print(f"wait-http: {a.url} did not answer 200 within {a.timeout:g} s", file=sys.stderr)
    return 1


def add_commands(sub) -> None:
    p = sub.add_parser("wait-http", help="wait (bounded) until a URL answers 200")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    p.add_argument("--pid", type=int, help="fail as soon as this process (the server) has exited")
    p.set_defaults(func=_wait_http)


def command_parsers(sub, group_name: str, group_help: str, description: str,
                    table: list[tuple[str, Callable, str]], state_dir: str) -> dict[str, argparse.ArgumentParser]:
    """One sub-parser per (name, function, help) of `table` under `group_name`, each taking
    --state-dir; returns them by name for the command-specific arguments."""
    group = sub.add_parser(group_name, help=group_help, description=description)
    commands = group.add_subparsers(dest="cmd", required=True)
    parsers = {}
    for name, func, help_text in table:
        parsers[name] = p = commands.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        p.add_argument("--state-dir", default=state_dir)
    return parsers
