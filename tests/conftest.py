"""Shared fixtures: ONE real tritonserver for the whole pytest session.

The server runs from a temporary model repository: a copy of model_repository/ plus
variants of box_embed (other crop policies, a small-batch encoder, a missing encoder).
At the end it is stopped by pid and the run fails if it died or its log shows a crash.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gen_encoders  # noqa: E402
import link_models  # noqa: E402
import logwatch  # noqa: E402
from crop_reference import CropParams  # noqa: E402
from serverctl.opensearch import OpenSearchNode  # noqa: E402
from serverctl.opensearch_cluster import OpenSearchCluster  # noqa: E402
from serverctl.proc import log_tail  # noqa: E402
from serverctl.triton import BACKEND_SO, TritonServer, install_backends, list_models, rust_backend_so  # noqa: E402

SOURCE_REPO = os.path.join(REPO_ROOT, "model_repository")
LOG_DIR = os.path.join(REPO_ROOT, ".cache", "triton", "test-logs")
MISSING_ENCODER = "no_such_encoder"
YOLO_MODELS = ["yolo", "yolo_yolox", "yolo_max3"]
BOX_EMBED_MODELS = ["box_embed", "box_embed_pad", "box_embed_context", "box_embed_small_encoder"]
FACE_MODELS = ["face_detect", "face_encoder"]  # + face_align (Rust) and face_embed (ensemble) when built

_SERVER: TritonServer | None = None
_NOT_BUILT_MSG = (
    "!!! box_embed backend NOT BUILT: target/release/libtriton_box_embed.so is missing, "
    "so every box_embed test is SKIPPED. Run `cargo build --release --workspace` "
    "(scripts/test.sh does) to test the backend. !!!"
)


def read_config(model_dir: str) -> str:
    with open(os.path.join(model_dir, "config.pbtxt")) as f:
        return f.read()


def config_parameters(text: str) -> dict:
    return dict(re.findall(r'parameters\s*\{\s*key:\s*"([^"]+)"\s*value\s*\{\s*string_value:\s*"([^"]*)"', text))


def set_parameter(text: str, key: str, value: str) -> str:
    pattern = re.compile(r'(parameters\s*\{\s*key:\s*"' + re.escape(key)
                         + r'"\s*value\s*\{\s*string_value:\s*")[^"]*(")')
    new, n = pattern.subn(lambda m: m.group(1) + value + m.group(2), text)
    assert n == 1, f"parameter {key} not found exactly once in config"
    return new


def set_field(text: str, field: str, value: str) -> str:
    new, n = re.subn(r"^(" + field + r":\s*).*$", lambda m: m.group(1) + value, text, count=1, flags=re.M)
    assert n == 1, f"field {field} not found in config"
    return new


def _variant(repo: str, source: str, name: str, params: dict | None = None, fields: dict | None = None):
    dst = os.path.join(repo, name)
    shutil.copytree(os.path.join(repo, source), dst)
    text = set_field(read_config(dst), "name", f'"{name}"')
    for k, v in (fields or {}).items():
        text = set_field(text, k, v)
    for k, v in (params or {}).items():
        text = set_parameter(text, k, v)
    with open(os.path.join(dst, "config.pbtxt"), "w") as f:
        f.write(text)


def build_test_repository(repo: str) -> None:
    shutil.copytree(SOURCE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    # Triton needs a version folder even for backends with no model file; a missing one
    # is reported by test_repository.py, and added here so the other tests still run.
    for name in list_models(repo):
        if not any(d.isdigit() for d in os.listdir(os.path.join(repo, name))):
            os.makedirs(os.path.join(repo, name, "1"))
    _variant(repo, "clip_image", "clip_image_b4", fields={"max_batch_size": "4"})
    _variant(repo, "box_embed", "box_embed_pad", {"crop_policy": "pad"})
    _variant(repo, "box_embed", "box_embed_context", {"crop_policy": "context"})
    _variant(repo, "box_embed", "box_embed_small_encoder", {"encoder_model": "clip_image_b4"})
    _variant(repo, "yolo", "yolo_yolox", {"variant": "yolox", "onnx_file": "yolox_nano.onnx"})
    _variant(repo, "yolo", "yolo_max3", {"max_detections": "3"})
    # Not loaded at startup: a failed load there would stop the whole server; the test loads it.
    _variant(repo, "box_embed", "box_embed_missing_encoder", {"encoder_model": MISSING_ENCODER})


# Under the test command (scripts/test.sh sets REQUIRE_ALL_TESTS=1) a skipped test fails the
# run: only tests marked `gpu` may skip, and they are counted into GPU_SKIP_LOG for the one
# "N GPU tests skipped: no GPU" line the test command prints.
REQUIRE_ALL = os.environ.get("REQUIRE_ALL_TESTS") == "1"
GPU_SKIP_LOG = os.environ.get("GPU_SKIP_LOG")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU; the only tests allowed to skip")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if item.get_closest_marker("gpu") is not None:
        if GPU_SKIP_LOG:
            with open(GPU_SKIP_LOG, "a") as f:
                f.write(f"SKIPPED (no GPU): {item.nodeid}: {_skip_reason(report)}\n")
        return
    if REQUIRE_ALL:
        report.outcome = "failed"
        report.longrepr = (f"skipped under the test command (REQUIRE_ALL_TESTS=1), which is a failure: "
                           f"{_skip_reason(report)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module skipped as a whole (pytest.skip(allow_module_level=True)) never reaches makereport.
    outcome = yield
    report = outcome.get_result()
    if report.skipped and REQUIRE_ALL:
        report.outcome = "failed"
        report.longrepr = f"module skipped under the test command (REQUIRE_ALL_TESTS=1): {_skip_reason(report)}"


def pytest_report_header(config):
    if backend_built():
        return f"box_embed backend: {BACKEND_SO}"
    return _NOT_BUILT_MSG


def pytest_terminal_summary(terminalreporter):
    if not backend_built():
        terminalreporter.write_sep("!", "box_embed backend not built", red=True, bold=True)
        terminalreporter.write_line(_NOT_BUILT_MSG, red=True, bold=True)
    if _SERVER is not None:
        terminalreporter.write_line(f"tritonserver log: {_SERVER.log_path}")


@pytest.fixture(scope="session")
def test_repository(tmp_path_factory) -> str:
    """The session's model repository (model_repository/ plus the variants), with the encoders
    generated, the backends installed and the weights linked; for servers a test starts itself."""
    gen_encoders.generate()
    gen_encoders.generate_text()
    for note in install_backends():
        print(note)
    try:
        link_models.link()
    except link_models.MissingWeights as e:
        pytest.fail(str(e), pytrace=False)
    repo = str(tmp_path_factory.mktemp("model_repository"))
    build_test_repository(repo)
    return repo


@pytest.fixture(scope="session")
def triton(test_repository):
    global _SERVER
    repo = test_repository
    models = ["clip_image", "clip_image_b4", "clip_text"]
    models += YOLO_MODELS + FACE_MODELS
    if backend_built():
        models += BOX_EMBED_MODELS + ["face_align"]
    else:
        warnings.warn(_NOT_BUILT_MSG, stacklevel=1)  # the warning is about this setup, not a caller
    if os.path.exists(rust_backend_so("preprocess")):
        models.append("preprocess")
        if backend_built():
            models.append("face_embed")
    os.makedirs(LOG_DIR, exist_ok=True)
    log_path = os.path.join(LOG_DIR, f"tritonserver-pytest-{os.getpid()}.log")
    server = TritonServer(repo, models, log_path=log_path)
    server.start()
    try:
        server.wait_ready(timeout=180)
    except Exception:
        server.stop()
        raise
    _SERVER = server
    server.repo = repo
    yield server

    died = not server.alive()
    code = server.returncode()
    server.stop()
    crashes = server.crash_lines()
    problems = []
    fatal = logwatch.new_fatal_lines()  # written after the last test, e.g. while a gateway stopped
    if fatal:
        problems.append("fatal lines in a server log:\n  " + "\n  ".join(fatal[:20]))
    if died:
        problems.append(f"tritonserver died during the tests (exit code {code})")
    if crashes:
        problems.append("crash lines in the server log:\n  " + "\n  ".join(crashes[:20]))
    if problems:
        pytest.fail("\n".join(problems) + f"\nlog: {server.log_path}\n{log_tail(server.log_path)}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _server_still_alive(request):
    """Blame the test during which the server died, or a watched log showed a panic."""
    yield
    fatal = logwatch.new_fatal_lines()
    if fatal:
        pytest.fail("fatal lines in a server log during this test (tests/logwatch.py):\n  " + "\n  ".join(fatal[:20]),
                    pytrace=False)
    if "triton" in request.fixturenames and _SERVER is not None and not _SERVER.alive():
        pytest.fail(f"tritonserver died (exit code {_SERVER.returncode()}); log {_SERVER.log_path}:\n"
                    f"{log_tail(_SERVER.log_path)}", pytrace=False)


def backend_built() -> bool:
    # The freshly built .so, not an older copy left in .cache (install_backends refreshes it).
    return os.path.exists(BACKEND_SO)


@pytest.fixture(scope="session")
def box_embed_ready(triton):
    if not backend_built():
        pytest.skip(_NOT_BUILT_MSG)
    return triton


class Encoder:
    """onnxruntime on the same model.onnx the server runs; callable [N,3,S,S] -> [N,D]."""

    def __init__(self, path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.dim = self.session.get_outputs()[0].shape[-1]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        parts = [self.session.run(None, {self.input: np.ascontiguousarray(images[i:i + 64], dtype=np.float32)})[0]
                 for i in range(0, len(images), 64)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)


@pytest.fixture(scope="session")
def encoder():
    gen_encoders.generate()
    return Encoder(gen_encoders.DEFAULT_OUT)


@pytest.fixture(scope="session")
def box_config():
    """Parameters of model_repository/box_embed, which the reference must follow."""
    return config_parameters(read_config(os.path.join(SOURCE_REPO, "box_embed")))


def crop_params(box_config: dict, policy: str | None = None) -> CropParams:
    return CropParams(
        policy=policy or box_config["crop_policy"],
        crop_size=int(box_config["crop_size"]),
        sampling_ratio=int(box_config["sampling_ratio"]),
        context_scale=float(box_config["context_scale"]),
        min_box_size=float(box_config["min_box_size"]),
    )


@pytest.fixture(scope="session")
def opensearch_url():
    """One OpenSearch for the session: OPENSEARCH_URL if set (nothing started, e.g. the node
    scripts/test.sh starts once), else a node from scripts/setup_opensearch.sh, stopped at the end."""
    url = os.environ.get("OPENSEARCH_URL")
    if url:
        yield url.rstrip("/")
        return
    node = OpenSearchNode().start()
    try:
        took = node.wait_ready(timeout=120)
        print(f"\nOpenSearch ready in {took:.1f}s at {node.url} (pid {node.pid})")
        yield node.url
    finally:
        died = not node.alive()
        tail = log_tail(node.log_path)
        node.stop()
    if died:
        pytest.fail(f"OpenSearch died during the tests (exit code {node.returncode()}); log tail:\n{tail}",
                    pytrace=False)


@pytest.fixture(scope="session")
def opensearch_cluster():
    """One three-node OpenSearch cluster for the session, whose nodes tests may kill and restart
    by pid: the one scripts/test.sh started (OPENSEARCH_CLUSTER_STATE_DIR names its state
    folder; it stops it), else one started here and stopped at the end. A cluster given only
    by OPENSEARCH_CLUSTER_URLS is not ours to kill, so then one is started here too. The
    session fails if a node is left down."""
    state_dir = os.environ.get("OPENSEARCH_CLUSTER_STATE_DIR")
    if state_dir:
        cluster = OpenSearchCluster.from_state(state_dir)
        cluster.wait_formed(timeout=60)
    else:
        cluster = OpenSearchCluster.new()
        took = cluster.start(timeout=240)
        print(f"\nOpenSearch cluster ready in {took:.1f}s at {','.join(cluster.urls)}")
    try:
        yield cluster
    finally:
        down = [node.node_name for node in cluster.nodes if not node.alive()]
        tails = {node.node_name: log_tail(node.log_path) for node in cluster.nodes if not node.alive()}
        if not state_dir:
            cluster.stop()
    if down:
        pytest.fail(f"OpenSearch cluster nodes left down after the tests: {down}; log tails:\n{tails}", pytrace=False)
