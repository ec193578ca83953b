"""Command line of serverctl: `python3 scripts/serverctl <group> <command> [options]`.

  triton {install-backends,env,start,run,stop,status}   the tritonserver (serverctl/triton.py)
  opensearch {java-home,home,start,stop,restart,status,url}   an OpenSearch node (serverctl/opensearch.py)
  opensearch-cluster {start,kill,stop,status,urls}       an OpenSearch cluster (serverctl/opensearch_cluster.py)
  wait-http URL [--timeout S] [--pid PID]              bounded wait until URL answers 200 (serverctl/proc.py)

Each module adds its sub-parsers, each bound to the function that runs it (set_defaults(func=...)).
"""
from __future__ import annotations

import argparse
import os
import sys

if not __package__:
    # Run as `python3 scripts/serverctl`: Python put this folder first on sys.path, where its
    # modules would be top-level names (`triton` is also a PyPI package). The folder above it
    # instead, so that they import as the package they are.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from serverctl import opensearch, opensearch_cluster, proc, triton  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="serverctl", description="Control the servers the project runs on loopback.")
    sub = p.add_subparsers(dest="group", required=True)
    for module in (triton, opensearch, opensearch_cluster, proc):
        module.add_commands(sub)
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
