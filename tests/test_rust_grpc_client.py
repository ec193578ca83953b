"""Runs the triton-client crate's integration tests (triton-client/tests/triton_grpc.rs)
against this session's Triton over gRPC, so the Rust client is tested against the real
server in every test run without starting a second one."""
import os
import subprocess

from conftest import REPO_ROOT


def test_rust_grpc_client_against_the_session_server(triton):
    env = dict(os.environ, TRITON_GRPC_URL=f"http://{triton.grpc_address}")
    # --nocapture shows each test's SKIPPED line, so a skip cannot pass silently here.
    run = subprocess.run(["cargo", "test", "--release", "-p", "triton-client", "--test", "triton_grpc",
                          "--", "--nocapture", "--test-threads=2"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "SKIPPED" not in output, output[-6000:]
    assert "test result: ok" in output, output[-6000:]
