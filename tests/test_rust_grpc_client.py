"""Runs the triton-client crate's integration tests (triton-client/tests/triton_grpc.rs)
against this session's Triton over gRPC, so the Rust client is tested against the real
server in every test run without starting a second one."""
import os
import re
import subprocess

import requests

from conftest import REPO_ROOT


def test_rust_grpc_client_against_the_session_server(triton):
    # Earlier tests may have left a model that failed to load on purpose, which makes the
    # whole server not ready (strict readiness); gRPC must then agree with HTTP.
    http_ready = requests.get(f"{triton.http_url}/v2/health/ready", timeout=10).status_code == 200
    # REQUIRE_ALL_TESTS=1: a test that cannot reach what it needs fails instead of skipping.
    env = dict(os.environ, TRITON_GRPC_URL=f"http://{triton.grpc_address}", TRITON_EXPECT_READY=str(int(http_ready)),
               REQUIRE_ALL_TESTS="1")
    # --workspace: the feature set of the test command's earlier `cargo test --workspace`, so
    # nothing is rebuilt. --include-ignored: the server tests are ignored in a plain cargo test.
    run = subprocess.run(["cargo", "test", "--release", "--workspace", "--test", "triton_grpc",
                          "--", "--include-ignored", "--test-threads=2"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    result = re.search(r"test result: ok\. (\d+) passed; 0 failed; 0 ignored", output)
    assert result, output[-6000:]
    with open(os.path.join(REPO_ROOT, "triton-client", "tests", "triton_grpc.rs")) as f:
        declared = len(re.findall(r"^#\[(?:tokio::)?test\]$", f.read(), flags=re.M))
    assert int(result.group(1)) == declared, f"{result.group(1)} of {declared} client tests ran:\n{output[-6000:]}"
