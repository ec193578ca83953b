"""The deployment files (docker/, k8s/) checked without a Docker engine or a cluster.

What runs here (docs/deploy.md, "What is checked"): Debian's docker-compose 1.29 and
compose-go (Docker Compose v2's loader, scripts/composecheck) resolve docker/compose.yaml;
hadolint lints the Dockerfiles; the Dockerfiles' Rust build is CI's own
command; kubernetes-validate checks every manifest against the Kubernetes API's schemas in
strict mode; the ServiceMonitors go through the Prometheus Operator's models (generated from
its CRD schemas); the gateway binary accepts the config files the stack gives it; the metrics
the autoscaler's query reads exist in a live Triton's /metrics. The checkers come from
scripts/setup_deploy_checks.sh.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest
import requests
import yaml

from serverctl.proc import free_port
from serverctl.triton import RUST_BACKENDS
from test_gateway import Gateway

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(REPO_ROOT, "docker")
K8S = os.path.join(REPO_ROOT, "k8s")
COMPOSE_FILE = os.path.join(DOCKER, "compose.yaml")
ENV_EXAMPLE = os.path.join(DOCKER, ".env.example")
TRITON_DOCKERFILE = os.path.join(DOCKER, "triton.Dockerfile")
GATEWAY_DOCKERFILE = os.path.join(DOCKER, "gateway.Dockerfile")
DEPLOY_VENV_BIN = os.path.join(REPO_ROOT, ".cache", "deploy", "venv", "bin")
# Kubernetes versions the manifests must be valid for: the oldest still commonly run, and the
# newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Placeholder keys for `config`: long enough for the gateway's 24-character minimum.
TEST_KEYS = {
    "GATEWAY_READ_KEYS": "read-key-for-config-only-0000",
    "GATEWAY_WRITE_KEYS": "write-key-for-config-only-000",
    "GRAFANA_ADMIN_PASSWORD": "grafana-password-for-config",
}
# glibc of the distributions the images build on and run on.
GLIBC = {"bookworm": (2, 36), "trixie": (2, 41), "ubuntu-24.04": (2, 39)}


def tool(name: str) -> str:
    path = os.path.join(DEPLOY_VENV_BIN, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} missing: run scripts/setup_deploy_checks.sh", pytrace=False)
    return path


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def yaml_documents(path: str) -> list[dict]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


# --- compose ---------------------------------------------------------------------------------
# Two loaders read docker/compose.yaml: Debian's docker-compose 1.29 (`config`) and compose-go,
# the loader of Docker Compose v2 (scripts/composecheck). They print the resolved file in
# different shapes (ports and volumes as strings or as objects); the helpers below read both.
COMPOSE_V1 = "docker-compose-1.29"
COMPOSE_V2 = "compose-go-v2"
CLUSTER_PROFILE = "opensearch-cluster"


def resolve_compose(loader: str, env_overrides: dict | None = None,
                    profiles: str = CLUSTER_PROFILE) -> subprocess.CompletedProcess:
    if loader == COMPOSE_V1:
        compose = shutil.which("docker-compose")
        if compose is None:
            pytest.fail("docker-compose missing: run scripts/setup_deploy_checks.sh", pytrace=False)
        command = [compose, "-f", COMPOSE_FILE, "--env-file", ENV_EXAMPLE, "config"]
    else:
        checker = os.path.join(REPO_ROOT, ".cache", "deploy", "bin", "composecheck")
        if not os.path.exists(checker):
            pytest.fail(f"{checker} missing: run scripts/setup_deploy_checks.sh", pytrace=False)
        command = [checker, COMPOSE_FILE, ENV_EXAMPLE, profiles]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "COMPOSE_", "GRAFANA_"))}
    env.update(TEST_KEYS)
    env.update(env_overrides or {})
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run(command, cwd=DOCKER, env=env, capture_output=True, text=True, timeout=60)


def load_compose(loader: str, profiles: str = CLUSTER_PROFILE) -> dict:
    result = resolve_compose(loader, profiles=profiles)
    assert result.returncode == 0, f"{loader} rejects docker/compose.yaml:\n{result.stderr}"
    return yaml.safe_load(result.stdout)  # JSON is YAML too


@pytest.fixture(scope="module", params=[COMPOSE_V1, COMPOSE_V2])
def compose(request) -> dict:
    """docker/compose.yaml resolved with docker/.env.example (and the cluster profile)."""
    return load_compose(request.param)


def ports(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of every published port."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
        else:
            parts = port.split("/")[0].split(":")
            assert len(parts) == 3, f"{port}: no host address, so every interface"
            found.append(tuple(parts))
    return found


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only) of every volume."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
        else:
            source, target, *mode = volume.split(":")
            found[target] = (source, mode == ["ro"])
    return found


def test_compose_file_validates_and_has_the_whole_stack(compose):
    services = compose["services"]
    assert set(services) == {"triton", "gateway", "opensearch-1", "opensearch-2", "opensearch-3",
                             "prometheus", "grafana"}
    # Nodes 2 and 3 are the profile that .env.example turns on; node 1 runs alone without it.
    assert "profiles" not in services["opensearch-1"]
    for node in ("opensearch-2", "opensearch-3"):
        assert services[node]["profiles"] == [CLUSTER_PROFILE]
    env = dict(line.split("=", 1) for line in read(ENV_EXAMPLE).splitlines() if line and not line.startswith("#"))
    assert env["COMPOSE_PROFILES"] == CLUSTER_PROFILE


def test_compose_runs_one_opensearch_node_without_the_cluster_profile():
    """Compose v2 drops the profile's services and refuses a dependency on a dropped one."""
    services = load_compose(COMPOSE_V2, profiles="")["services"]
    assert set(services) == {"triton", "gateway", "opensearch-1", "prometheus", "grafana"}


@pytest.mark.parametrize("loader", [COMPOSE_V1, COMPOSE_V2])
@pytest.mark.parametrize("variable", sorted(TEST_KEYS))
def test_compose_refuses_to_run_without_keys(variable, loader):
    result = resolve_compose(loader, {variable: None})
    assert result.returncode != 0
    assert variable in result.stderr, result.stderr


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        for dependency, how in service.get("depends_on", {}).items():
            assert how["condition"] == "service_healthy", f"{name} -> {dependency}: {how}"
    assert set(compose["services"]["gateway"]["depends_on"]) == {"triton", "opensearch-1"}


def test_published_ports_bind_loopback_only(compose):
    exposed = {}
    for name, service in compose["services"].items():
        for address, host_port, container_port in ports(service):
            assert address == "127.0.0.1", f"{name} publishes {host_port} on {address or 'every interface'}"
            exposed.setdefault(name, set()).add(container_port)
    # OpenSearch (no security plugin) and the gateway's ops port (no keys) are never published.
    assert not any(name.startswith("opensearch") for name in exposed)
    assert exposed["gateway"] == {"8080"}


def gateway_env_names() -> set[str]:
    """The GATEWAY_* variables the gateway binary reads (its clap definitions)."""
    source = read(os.path.join(REPO_ROOT, "gateway", "src", "cli.rs"))
    names = set(re.findall(r'env = "(GATEWAY_[A-Z_]+)"', source))
    assert "GATEWAY_WRITE_KEYS" in names
    return names


def test_gateway_variables_are_ones_the_gateway_reads(compose):
    known = gateway_env_names()
    env = compose["services"]["gateway"]["environment"]
    unknown = {name for name in env if name.startswith("GATEWAY_")} - known
    assert not unknown, f"the gateway reads no {sorted(unknown)}"
    assert env["GATEWAY_STORE"] == "opensearch"
    assert env["GATEWAY_TRITON_ENDPOINT"] == "http://triton:8001"
    urls = env["GATEWAY_OPENSEARCH_URL"].split(",")
    nodes = [name for name in compose["services"] if name.startswith("opensearch-")]
    assert urls == [f"http://{node}:9200" for node in sorted(nodes)]
    for name, value in env.items():
        if name.endswith("_LISTEN"):
            assert value.startswith("0.0.0.0:"), f"{name}={value}: unreachable from the other containers"


def test_triton_gets_a_gpu_and_the_model_repository(compose):
    triton = compose["services"]["triton"]
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and str(device["count"]) == "1"
    source, read_only = mounts(triton)["/models"]
    assert read_only and source == os.path.join(REPO_ROOT, "deploy", "model_repository_gpu")
    # The command the image runs reads that repository.
    assert "--model-repository=/models" in dockerfile_cmd(TRITON_DOCKERFILE)


def test_monitoring_files_the_stack_mounts_exist_and_agree(compose):
    """Prometheus' config and rules and Grafana's provisioning live in monitoring/: every bind
    mount from the repository must exist (Docker would mount an empty folder instead), the
    scrape targets must be the services' metrics ports, the rules must be where the config
    loads them from, and Grafana must read the dashboards where compose mounts them."""
    for name, service in compose["services"].items():
        for source, _ in mounts(service).values():
            if source.startswith(REPO_ROOT + os.sep) and not source.startswith(os.path.join(REPO_ROOT, "deploy")):
                assert os.path.exists(source), f"{name} mounts {source}, which does not exist"
    prometheus = {target: source for target, (source, _) in mounts(compose["services"]["prometheus"]).items()}
    config = yaml.safe_load(read(prometheus["/etc/prometheus/prometheus.yml"]))
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    metrics_port = re.search(r"--metrics-port=(\d+)", " ".join(dockerfile_cmd(TRITON_DOCKERFILE)))[1]
    ops_port = compose["services"]["gateway"]["environment"]["GATEWAY_OPS_LISTEN"].rsplit(":", 1)[1]
    assert targets["triton"] == [f"triton:{metrics_port}"]
    assert targets["gateway"] == [f"gateway:{ops_port}"]
    for pattern in config["rule_files"]:
        folder = os.path.normpath(os.path.join("/etc/prometheus", os.path.dirname(pattern)))
        assert folder in prometheus, f"rule files {pattern} ({folder}) are not mounted"
        assert glob.glob(os.path.join(prometheus[folder], os.path.basename(pattern))), f"no rule file in {folder}"
    grafana = {target: source for target, (source, _) in mounts(compose["services"]["grafana"]).items()}
    provisioning = grafana["/etc/grafana/provisioning"]
    providers = [provider for path in glob.glob(os.path.join(provisioning, "dashboards", "*.y*ml"))
                 for provider in yaml.safe_load(read(path)).get("providers", [])]
    assert providers, f"no dashboard provider in {provisioning}/dashboards"
    for provider in providers:
        folder = provider["options"]["path"]
        assert folder in grafana and glob.glob(os.path.join(grafana[folder], "*.json")), \
            f"Grafana reads dashboards from {folder}; compose mounts {sorted(grafana)}"
    sources = [source for path in glob.glob(os.path.join(provisioning, "datasources", "*.y*ml"))
               for source in yaml.safe_load(read(path)).get("datasources", [])]
    assert any(source["url"] == "http://prometheus:9090" for source in sources), sources


# --- Dockerfiles -----------------------------------------------------------------------------

def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in read(path).splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            joined.append(current)
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def stages(path: str) -> list[dict]:
    result = []
    for instruction, args in instructions(path):
        if instruction == "FROM":
            words = args.split()
            result.append({"image": words[0], "name": words[2] if len(words) > 2 else None, "steps": []})
        else:
            result[-1]["steps"].append((instruction, args))
    return result


def dockerfile_cmd(path: str) -> list[str]:
    return json.loads([args for instruction, args in stages(path)[-1]["steps"] if instruction == "CMD"][-1])


def cargo_commands(shell: str) -> list[str]:
    """Every `cargo ...` command of a shell text, one per command (split at && ; | and newlines)."""
    commands = []
    for part in re.split(r"&&|;|\|\||\n", shell):
        if part.strip().startswith("cargo "):
            commands.append(" ".join(shlex.split(part, comments=True)))
    return commands


def ci_cargo_builds() -> set[str]:
    test_sh = read(os.path.join(REPO_ROOT, "scripts", "test.sh"))
    builds = {command for command in cargo_commands(test_sh) if command.startswith("cargo build")}
    assert builds, "scripts/test.sh builds nothing"
    return builds


@pytest.mark.parametrize("dockerfile", [TRITON_DOCKERFILE, GATEWAY_DOCKERFILE], ids=os.path.basename)
def test_rust_build_stage_runs_the_ci_build(dockerfile):
    builds = []
    for stage in stages(dockerfile):
        for instruction, args in stage["steps"]:
            if instruction == "RUN":
                args = re.sub(r"--mount=\S+\s*", "", args)
                builds += [c for c in cargo_commands(args) if c.startswith("cargo")]
    assert builds, "no cargo command"
    assert set(builds) <= ci_cargo_builds(), f"{builds} are not CI's {sorted(ci_cargo_builds())}"


def test_triton_image_is_a_fixed_ngc_release_with_a_glibc_the_backends_fit():
    all_stages = stages(TRITON_DOCKERFILE)
    runtime = all_stages[-1]["image"]
    match = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d\d)\.(\d\d)-py3", runtime)
    assert match, runtime
    # The cancellation crashes (server#7368, #8034 and a related fix) are fixed from 25.06.
    assert (int(match[1]), int(match[2])) >= (25, 6), runtime
    build = next(stage for stage in all_stages if stage["name"] == "backends")
    rust = re.fullmatch(r"rust:(\d+)\.(\d+)\.(\d+)-(\w+)", build["image"])
    assert rust, f"the Rust image must name a full version and a distribution: {build['image']}"
    # Triton 25.x runs on Ubuntu 24.04: the build's glibc must not be newer.
    assert GLIBC[rust[4]] <= GLIBC["ubuntu-24.04"], f"{rust[4]} glibc {GLIBC[rust[4]]} > Ubuntu 24.04's"
    workspace = tomllib.loads(read(os.path.join(REPO_ROOT, "Cargo.toml")))
    minimum = tuple(int(x) for x in workspace["workspace"]["package"]["rust-version"].split("."))
    assert (int(rust[1]), int(rust[2])) >= minimum[:2]


def test_triton_image_installs_every_rust_backend_where_triton_looks():
    steps = [step for stage in stages(TRITON_DOCKERFILE) for step in stage["steps"]]
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    copies = [args.split() for instruction, args in stages(TRITON_DOCKERFILE)[-1]["steps"] if instruction == "COPY"]
    assert ["--from=backends", "/out/", "/opt/tritonserver/backends/"] in copies
    for name in RUST_BACKENDS:
        assert f"target/release/libtriton_{name}.so /out/{name}/libtriton_{name}.so" in runs, name
    assert "--backend-directory=/opt/tritonserver/backends" in dockerfile_cmd(TRITON_DOCKERFILE)


def test_triton_image_nvrtc_is_the_one_ci_compiles_the_kernels_with():
    pinned = re.search(r'^NVRTC_VERSION="([^"]+)"', read(os.path.join(REPO_ROOT, "scripts", "setup_nvrtc.sh")), re.M)
    args = [args for stage in stages(TRITON_DOCKERFILE) for instruction, args in stage["steps"] if instruction == "ARG"]
    assert f"NVRTC_VERSION={pinned[1]}" in args, args


@pytest.mark.parametrize("dockerfile,uid_min", [(TRITON_DOCKERFILE, 1000), (GATEWAY_DOCKERFILE, 1000)],
                         ids=["triton", "gateway"])
def test_images_run_as_a_numeric_non_root_user(dockerfile, uid_min):
    users = [args for instruction, args in stages(dockerfile)[-1]["steps"] if instruction == "USER"]
    assert users, "no USER: the image runs as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) >= uid_min and (not gid or gid.isdigit()), users[-1]


def healthcheck(dockerfile: str) -> str:
    checks = [args for instruction, args in stages(dockerfile)[-1]["steps"] if instruction == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    return checks[-1]


def test_gateway_image_checks_health_on_its_ops_port():
    env = " ".join(args for instruction, args in stages(GATEWAY_DOCKERFILE)[-1]["steps"] if instruction == "ENV")
    ops_port = re.search(r"GATEWAY_OPS_LISTEN=\S+:(\d+)", env)[1]
    check = healthcheck(GATEWAY_DOCKERFILE)
    assert f"http://127.0.0.1:{ops_port}/health" in check, check
    assert re.search(r"GATEWAY_LISTEN=0\.0\.0\.0:\d+", env), "the image must listen beyond loopback (and so need keys)"


def test_triton_image_checks_readiness():
    assert "/v2/health/ready" in healthcheck(TRITON_DOCKERFILE)


def test_hadolint_finds_nothing():
    result = subprocess.run([tool("hadolint"), TRITON_DOCKERFILE, GATEWAY_DOCKERFILE],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_yaml_files_pass_yamllint():
    config = ("{extends: default, rules: {line-length: {max: 140}, document-start: disable, "
              "truthy: {check-keys: false}}}")
    files = [COMPOSE_FILE] + sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True))
    result = subprocess.run([tool("yamllint"), "--strict", "-d", config, *files], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Kubernetes ------------------------------------------------------------------------------

def kustomization() -> dict:
    return yaml.safe_load(read(os.path.join(K8S, "kustomization.yaml")))


def manifests() -> dict[str, list[dict]]:
    return {name: yaml_documents(os.path.join(K8S, name)) for name in kustomization()["resources"]}


def objects(kind: str) -> list[dict]:
    return [doc for docs in manifests().values() for doc in docs if doc["kind"] == kind]


def one(kind: str, name: str) -> dict:
    found = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_kustomization_lists_every_manifest():
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == on_disk
    images = {image["name"] for image in kustomization()["images"]}
    used = {container["image"] for kind in ("Deployment", "StatefulSet") for doc in objects(kind)
            for container in doc["spec"]["template"]["spec"]["containers"]}
    assert used == images


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version):
    files = [os.path.join(K8S, name) for name in kustomization()["resources"]]
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", version, *files],
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(r"passed for resource (\S+)/", output)
    without_schema = re.findall(r"Couldn't find schema for kind (\S+)", output)
    # Every object is checked: by this schema, or (ServiceMonitor) by the next test.
    assert set(without_schema) <= {"ServiceMonitor"}, without_schema
    assert len(passed) + len(without_schema) == sum(len(docs) for docs in manifests().values())


SERVICE_MONITOR_CHECK = """
import json, sys
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
for doc in json.load(sys.stdin):
    model = ServiceMonitor.model_validate(doc)
    # The models ignore unknown fields: a field lost on the way back is one the CRD lacks.
    back = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert back == doc, f"fields the ServiceMonitor CRD does not have: {doc} -> {back}"
"""


def test_service_monitors_fit_the_prometheus_operator_schema_and_their_services():
    monitors = objects("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"triton", "gateway"}
    result = subprocess.run([tool("python"), "-c", SERVICE_MONITOR_CHECK], input=json.dumps(monitors),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in objects("Service") if selector.items() <= s["metadata"]["labels"].items()]
        assert len(services) == 1, f"{monitor['metadata']['name']} selects {len(services)} services"
        port_names = {port["name"] for port in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names, f"{endpoint['port']} not among {port_names}"


def container(kind: str, name: str) -> dict:
    return one(kind, name)["spec"]["template"]["spec"]["containers"][0]


def port_number(spec: dict, port) -> int:
    return next(p["containerPort"] for p in spec["ports"] if p["name"] == port) if isinstance(port, str) else port


def test_triton_probes_gpu_and_image_command():
    triton = container("StatefulSet", "triton")
    probes = {kind: triton[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    http_port = int(re.search(r"--http-port=(\d+)", " ".join(triton["args"]))[1])
    for probe in probes.values():
        assert port_number(triton, probe["port"]) == http_port
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The manifest's command is the image's own (the Dockerfile's CMD).
    assert triton["args"] == dockerfile_cmd(TRITON_DOCKERFILE)
    pod = one("StatefulSet", "triton")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    user = [args for instruction, args in stages(TRITON_DOCKERFILE)[-1]["steps"] if instruction == "USER"][-1]
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]


def gateway_config_text() -> str:
    return one("ConfigMap", "gateway-config")["data"]["gateway.toml"]


def test_gateway_probes_and_keys():
    gateway = container("Deployment", "gateway")
    config = tomllib.loads(gateway_config_text())
    ops_port = int(config["server"]["ops_listen"].rsplit(":", 1)[1])
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health"
    assert port_number(gateway, gateway["readinessProbe"]["httpGet"]["port"]) == ops_port
    # Liveness must not follow /health, which is 503 whenever Triton or OpenSearch is down.
    assert "httpGet" not in gateway["livenessProbe"]
    keys = {env["name"]: env["valueFrom"]["secretKeyRef"] for env in gateway["env"]}
    assert set(keys) == {"GATEWAY_READ_KEYS", "GATEWAY_WRITE_KEYS"} <= gateway_env_names()
    pod = one("Deployment", "gateway")["spec"]["template"]["spec"]
    user = [args for instruction, args in stages(GATEWAY_DOCKERFILE)[-1]["steps"] if instruction == "USER"][-1]
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]


def test_gateway_lists_every_triton_pod_the_autoscaler_may_start():
    hpa = one("HorizontalPodAutoscaler", "triton")
    statefulset = one("StatefulSet", "triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "triton"}
    service, port = statefulset["spec"]["serviceName"], re.search(r"--grpc-port=(\d+)", " ".join(
        container("StatefulSet", "triton")["args"]))[1]
    assert one("Service", service)["spec"]["clusterIP"] == "None"
    endpoints = tomllib.loads(gateway_config_text())["triton"]["endpoints"]
    assert endpoints == [f"http://triton-{i}.{service}:{port}" for i in range(hpa["spec"]["maxReplicas"])]


def adapter_rules() -> list[dict]:
    values = yaml.safe_load(read(os.path.join(K8S, "helm", "prometheus-adapter-values.yaml")))
    assert values["rules"]["default"] is False
    return values["rules"]["custom"]


def test_autoscaler_metric_is_the_one_the_adapter_serves():
    hpa = one("HorizontalPodAutoscaler", "triton")
    names = {rule["name"]["as"]: rule for rule in adapter_rules()}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    rule = names[metric["pods"]["metric"]["name"]]
    # A Pods metric must be attributed to pods (and their namespace) by the rule.
    overrides = rule["resources"]["overrides"]
    assert overrides["pod"] == {"resource": "pod"} and overrides["namespace"] == {"resource": "namespace"}
    assert re.search(r"\[\d+[sm]\]", rule["metricsQuery"]), "a rate over a window"


def test_adapter_rule_reads_metrics_a_live_triton_exports(triton):
    text = requests.get(triton.metrics_url, timeout=10).text
    exported = set(re.findall(r"^# TYPE (\w+) ", text, re.M))
    for rule in adapter_rules():
        queried = set(re.findall(r"\b(nv_\w+)\{", rule["seriesQuery"] + " " + rule["metricsQuery"]))
        assert queried, rule
        assert queried <= exported, f"not exported by Triton: {sorted(queried - exported)}"
        # Both are counters, so rate() is right for them.
        for name in queried:
            assert re.search(rf"^# TYPE {name} counter$", text, re.M), name


def test_gateway_reaches_the_opensearch_chart_pods():
    values = yaml.safe_load(read(os.path.join(K8S, "helm", "opensearch-values.yaml")))
    base = f"{values['clusterName']}-{values['nodeGroup']}"
    urls = tomllib.loads(gateway_config_text())["store"]["opensearch_urls"]
    assert urls == [f"{values['protocol']}://{base}-{i}.{base}-headless:9200" for i in range(values["replicas"])]
    # The chart's NetworkPolicy admits pods with this label only.
    labels = one("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert values["networkPolicy"]["http"]["enabled"] and labels[f"{base}-http-client"] == "true"
    assert values["image"]["tag"] == compose_opensearch_version()


def compose_opensearch_version() -> str:
    raw = yaml.safe_load(read(COMPOSE_FILE))
    return raw["x-opensearch-node"]["image"].split(":")[1]


# --- the gateway binary reads the configs the stack gives it ----------------------------------

def start_gateway_with(config_path: str, tmp_path) -> tuple[Gateway, int]:
    """The gateway on loopback with the config, the embedded store in tmp_path and no Triton;
    returns once it answers at all, with its ops port."""
    ops_port = free_port()
    gateway = Gateway(str(tmp_path / "data"), "127.0.0.1:1",
                      extra_args=("--config", config_path, "--ops-listen", f"127.0.0.1:{ops_port}"))
    return gateway.start(timeout=60, require_healthy=False), ops_port


@pytest.mark.parametrize("source", ["docker/gateway.toml", "k8s ConfigMap gateway-config"])
def test_gateway_starts_with_the_config_file_and_applies_it(source, tmp_path):
    """The real binary loads and validates each config the stack hands it (unknown keys are
    errors), and serves its Host allow-list: the names listed get through to /health (503
    without Triton), any other name gets 403."""
    if source.startswith("docker/"):
        text = read(os.path.join(REPO_ROOT, source))
    else:
        text = gateway_config_text()
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    allowed = tomllib.loads(text)["auth"]["allowed_hosts"]
    gateway, ops_port = start_gateway_with(str(path), tmp_path)
    try:
        for host in allowed:
            r = gateway.get("/health", headers={"Host": f"{host}:{gateway.port}"})
            assert r.status_code == 503, f"{host}: {r.status_code} {r.text}"
        r = gateway.get("/health", headers={"Host": "rebinding.example"})
        assert r.status_code == 403 and "allowed_hosts" in r.text, r.text
        report = requests.get(f"http://127.0.0.1:{ops_port}/health", timeout=10).json()
        assert report["status"] == "unavailable" and report["store"]["ready"] is True, report
    finally:
        gateway.stop()


def test_gateway_refuses_a_config_with_an_unknown_key(tmp_path):
    """The check above can fail: a misspelt key stops the gateway at start."""
    path = tmp_path / "gateway.toml"
    path.write_text(read(os.path.join(DOCKER, "gateway.toml")).replace("allowed_hosts", "allowed_host"))
    with pytest.raises(RuntimeError, match="gateway exited with 1"):
        start_gateway_with(str(path), tmp_path)
    log = read(Gateway(str(tmp_path), "127.0.0.1:1").log_path)
    assert "unknown field `allowed_host`" in log, log[-2000:]
