"""Watches the logs of the servers the tests start for lines that must never appear.

A Rust panic inside a gateway handler task does not stop the process: the task's client
gets an error and the service carries on, so a green test can hide one. Every server log
registered here is scanned after each test (conftest.py) from where the previous scan
stopped, and the test during which such a line appeared fails with it."""
from __future__ import annotations

import os
import re

# `panicked at` is the Rust standard library's panic message; the others are what the
# runtime prints when a process aborts.
FATAL_LINE = re.compile(r"panicked at|fatal runtime error|stack overflow|SIGSEGV|Aborted \(core dumped\)")

_offsets: dict[str, int] = {}


def watch(path: str) -> None:
    """Scan `path` from its current end on (what earlier runs appended is not ours)."""
    if path not in _offsets:
        _offsets[path] = os.path.getsize(path) if os.path.exists(path) else 0


def new_fatal_lines() -> list[str]:
    """Fatal lines written to any watched log since the last call, each prefixed by its log."""
    found = []
    for path, offset in _offsets.items():
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        _offsets[path] = offset + len(data)
        for line in data.decode("utf-8", "replace").splitlines():
            if FATAL_LINE.search(line):
                found.append(f"{os.path.basename(path)}: {line.strip()}")
    return found
