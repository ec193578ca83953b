"""Runs the triton-client crate's integration tests (triton-client/tests/triton_grpc.rs)
against this session's Triton over gRPC, so the Rust client is tested against the real
server in every test run without starting a second one."""
import os
import subprocess

import requests

from conftest import REPO_ROOT


def test_rust_grpc_client_against_the_session_server(triton):
    # Earlier tests may have left a model that failed to load on purpose, which makes the
    # whole server not ready (strict readiness); gRPC must then agree with HTTP.
    http_ready = requests.get(f"{triton.http_url}/v2/health/ready", timeout=10).status_code == 200
    env = dict(os.environ, TRITON_GRPC_URL=f"http://{triton.grpc_address}", TRITON_EXPECT_READY=str(int(http_ready)))
    # --workspace: the feature set of the test command's earlier `cargo test --workspace`, so
    # nothing is rebuilt. --nocapture shows each test's SKIPPED line: no skip passes silently.
    run = subprocess.run(["cargo", "test", "--release", "--workspace", "--test", "triton_grpc",
                          "--", "--nocapture", "--test-threads=2"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "SKIPPED" not in output, output[-6000:]
    assert "test result: ok" in output, output[-6000:]
