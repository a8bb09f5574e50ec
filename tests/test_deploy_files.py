"""The files in deploy/ and the Dockerfile say what a node really accepts.

No container engine or Kubernetes runs in the test suite, so each file is parsed and checked
against the node itself: every setting it passes (flags, AEGIS_* variables) goes through the
same loaders ``aegis`` uses, the ports it publishes, probes and exposes are the ports those
settings bind, and the stop grace periods outlast the drain. The Prometheus rules and the
Grafana dashboard may name only metrics that a real node's /metrics exports.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from aegiskv.server import cli
from aegiskv.server.settings import Settings, build, parse_address

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SECRET = "s" * 32  # stands in for the secret each file takes from its operator


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The ENV of the final stage (``ENV A=1 B=2`` form)."""
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    env: dict[str, str] = {}
    for keyword, arguments in instructions[last_from:]:
        if keyword == "ENV":
            for assignment in shlex.split(arguments):
                name, sep, value = assignment.partition("=")
                assert sep, f"ENV {arguments!r}: use the NAME=value form"
                env[name] = value
    return env


def node_settings(environ: dict[str, str]) -> Settings:
    """What a node started with this environment would run with (raises ConfigError if refused)."""
    return build(environ={name: value for name, value in environ.items() if name.startswith("AEGIS_")})


def bound_ports(settings: Settings) -> dict[str, int]:
    ports = {"native": parse_address(settings.bind)[1], "cluster": parse_address(settings.cluster_bind)[1]}
    for name, address in (("resp", settings.resp_bind), ("gossip", settings.gossip), ("health", settings.health_addr)):
        if address:
            ports[name] = parse_address(address)[1]
    return ports


def probe_url(command: list[str]) -> str:
    """The URL a healthcheck command fetches."""
    urls = re.findall(r"https?://[^'\" ]+", " ".join(command))
    assert len(urls) == 1, command
    return urls[0]


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", str(text).strip())
    assert match, f"not a duration: {text!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    return dockerfile_env(dockerfile_instructions(ROOT / "Dockerfile"))


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------


def test_dockerfile_builds_compiled_in_a_builder_stage_and_runs_as_a_user() -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    keywords = [keyword for keyword, _ in instructions]
    assert keywords[0] == "ARG" and instructions[0][1].startswith("BASE_IMAGE="), "the base image is a build ARG"
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert len(stages) == 2 and stages[0] == "${BASE_IMAGE} AS builder" and stages[1] == "${BASE_IMAGE}", stages
    builder_start, final_start = (index for index, keyword in enumerate(keywords) if keyword == "FROM")
    builder_runs = " ".join(
        arguments for keyword, arguments in instructions[builder_start:final_start] if keyword == "RUN"
    )
    assert "AEGISKV_COMPILE=1" in builder_runs
    final = instructions[final_start:]
    final_keywords = [keyword for keyword, _ in final]
    assert "COPY --from=builder" in " ".join(f"{k} {a}" for k, a in final)
    user = next(arguments for keyword, arguments in final if keyword == "USER")
    assert user not in ("root", "0"), user
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert final_keywords.count("ENTRYPOINT") == 1
    assert json.loads(next(arguments for keyword, arguments in final if keyword == "ENTRYPOINT")) == ["aegis"]


def test_dockerfile_ports_volume_and_healthcheck_match_the_node_settings(image_env) -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    settings = node_settings(image_env)  # every AEGIS_* variable of the image is a valid setting
    ports = bound_ports(settings)
    exposed = {item for keyword, arguments in instructions if keyword == "EXPOSE" for item in arguments.split()}
    expected = {f"{port}/tcp" for port in ports.values()} | {f"{ports['gossip']}/udp"}
    assert exposed == expected
    volumes = [json.loads(arguments) for keyword, arguments in instructions if keyword == "VOLUME"]
    assert volumes == [[settings.data_dir]]
    healthcheck = next(arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe_url(command) == f"http://127.0.0.1:{ports['health']}/ready"


# ---------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------


def compose_services() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services: dict[str, Any] = document["services"]
    return services


def test_compose_runs_three_signed_nodes_that_seed_each_other(image_env) -> None:
    services = compose_services()
    assert len(services) == 3
    names = set(services)
    for name, service in services.items():
        environment = {key: str(value) for key, value in service["environment"].items()}
        for secret in ("AEGIS_GOSSIP_SECRET", "AEGIS_AUTH_TOKEN"):
            assert environment[secret].startswith("${" + secret + ":?"), f"compose must demand {secret}"
            environment[secret] = SECRET
        settings = node_settings({**image_env, **environment})
        assert settings.auth_token == SECRET  # clients must authenticate
        assert settings.node_id == name
        assert settings.seeds is not None
        seeds = {parse_address(seed) for seed in settings.seeds}
        assert seeds == {(other, bound_ports(settings)["gossip"]) for other in names}
        assert service["volumes"] == [f"{name}-data:{settings.data_dir}"]


def test_compose_ports_probes_and_grace_period_agree_with_the_node(image_env) -> None:
    for name, service in compose_services().items():
        environment = {key: str(value) for key, value in service["environment"].items()}
        settings = node_settings(
            {**image_env, **environment, "AEGIS_GOSSIP_SECRET": SECRET, "AEGIS_AUTH_TOKEN": SECRET}
        )
        ports = bound_ports(settings)
        published = {}
        for mapping in service["ports"]:
            host, host_port, container_port = mapping.split(":")
            assert host == "127.0.0.1", f"{name}: publish on loopback only ({mapping})"
            assert int(container_port) in ports.values(), f"{name}: {mapping} publishes a port the node does not bind"
            published[int(container_port)] = int(host_port)
        # The node advertises the address a client on the host reaches it at.
        assert settings.client_advertise == f"127.0.0.1:{published[ports['native']]}"
        assert settings.resp_advertise == f"127.0.0.1:{published[ports['resp']]}"
        assert probe_url(service["healthcheck"]["test"]) == f"http://127.0.0.1:{ports['health']}/ready"
        assert service["stop_signal"] == "SIGTERM"
        assert seconds(service["stop_grace_period"]) > settings.drain_timeout


def test_docker_compose_config_accepts_the_file_where_available(tmp_path) -> None:
    # Compose's own validation, offline: Docker's compose plugin where the docker CLI has it,
    # else docker-compose (v1, the Debian package .ci/run installs). podman-compose 1.0 has no
    # `config` command.
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        if command == ["docker", "compose"]:
            probe = subprocess.run([*command, "version"], capture_output=True, text=True, check=False, timeout=60)
            if probe.returncode != 0:  # a docker CLI without the compose plugin
                continue

        def config(command: list[str] = command, **env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, "-f", str(DEPLOY / "docker-compose.yml"), "config"],
                capture_output=True,
                text=True,
                check=False,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **env},
                cwd=tmp_path,
                timeout=60,
            )

        result = config(AEGIS_GOSSIP_SECRET=SECRET, AEGIS_AUTH_TOKEN=SECRET)
        assert result.returncode == 0, result.stderr
        resolved = yaml.safe_load(result.stdout)
        assert sorted(resolved["services"]) == ["node1", "node2", "node3"]
        assert {service["environment"]["AEGIS_GOSSIP_SECRET"] for service in resolved["services"].values()} == {SECRET}
        # Without the secret or the token compose refuses, rather than start an unsigned or open cluster.
        refused = config(AEGIS_AUTH_TOKEN=SECRET)
        assert refused.returncode != 0 and "AEGIS_GOSSIP_SECRET" in refused.stderr, refused.stderr
        refused = config(AEGIS_GOSSIP_SECRET=SECRET)
        assert refused.returncode != 0 and "AEGIS_AUTH_TOKEN" in refused.stderr, refused.stderr
        return
    pytest.skip("neither docker compose nor docker-compose on this machine")


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------


def kubernetes_objects() -> dict[str, Any]:
    return {item["kind"]: item for item in yaml.safe_load_all((DEPLOY / "kubernetes" / "aegiskv.yaml").read_text())}


def test_kubernetes_statefulset_env_ports_probes_and_drain(image_env) -> None:
    objects = kubernetes_objects()
    service, statefulset = objects["Service"], objects["StatefulSet"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    name = statefulset["metadata"]["name"]
    replicas = statefulset["spec"]["replicas"]
    environment = {}
    for variable in container["env"]:
        if "value" in variable:
            environment[variable["name"]] = variable["value"].replace("$(POD_NAME)", f"{name}-0")
        elif variable["name"].startswith("AEGIS_"):
            environment[variable["name"]] = SECRET  # from a Secret
    settings = node_settings({**image_env, **environment})
    ports = bound_ports(settings)
    assert settings.auth_token == SECRET and settings.gossip_secret == SECRET  # both from the Secret
    assert settings.node_id == f"{name}-0"
    assert settings.seeds is not None
    assert {parse_address(seed) for seed in settings.seeds} == {
        (f"{name}-{index}.{service['metadata']['name']}", ports["gossip"]) for index in range(replicas)
    }
    container_ports = {
        (port["name"], port["containerPort"], port.get("protocol", "TCP")) for port in container["ports"]
    }
    assert container_ports == {
        ("native", ports["native"], "TCP"),
        ("resp", ports["resp"], "TCP"),
        ("gossip-tcp", ports["gossip"], "TCP"),
        ("gossip-udp", ports["gossip"], "UDP"),
        ("cluster", ports["cluster"], "TCP"),
        ("health", ports["health"], "TCP"),
    }
    names = {port_name for port_name, _, _ in container_ports}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == names
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in pre_stop  # the node is PID 1 (the image's ENTRYPOINT) and drains on SIGTERM
    assert pod["terminationGracePeriodSeconds"] > settings.drain_timeout
    assert pod["securityContext"]["runAsNonRoot"] is True
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert container["volumeMounts"] == [{"name": claim["metadata"]["name"], "mountPath": settings.data_dir}]


# ---------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------


def systemd_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / "aegiskv.service").read_text())
    return unit


def test_systemd_unit_flags_are_real_and_it_stops_by_draining() -> None:
    unit = systemd_unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    program, *args = shlex.split(service["ExecStart"])
    assert Path(program).name == "aegis"
    namespace = vars(cli.build_parser().parse_args(args))  # an unknown flag exits here
    config_path = namespace.pop("config")
    assert config_path == "/etc/aegiskv/aegiskv.toml"
    settings = build(environ={}, flags=namespace)
    assert settings.pid_file == service["PIDFile"]
    assert settings.data_dir == "/var/lib/" + service["StateDirectory"]
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > settings.drain_timeout
    assert service["RestartPreventExitStatus"] == "2"  # a refused start is not retried
    assert service["User"] != "root"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path) -> None:
    aegis = Path(sys.executable).parent / "aegis"
    if not aegis.exists():
        pytest.skip("no aegis script beside this interpreter")
    text = (DEPLOY / "systemd" / "aegiskv.service").read_text().replace("/opt/aegiskv/bin/aegis", str(aegis))
    unit = tmp_path / "aegiskv.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    # verify exits 0 on unknown keys and only prints them: any output is a finding.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# ---------------------------------------------------------------------------
# Prometheus rules and the Grafana dashboard, against a real node's /metrics
# ---------------------------------------------------------------------------

# PromQL words that look like metric names but are not.
_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}
)
# Metrics Prometheus adds itself to every scrape target.
_PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\boffset\s+\w+", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        word = match.group(1)
        if word not in _PROMQL_WORDS:
            names.add(word)
    return names


def test_metric_names_reads_promql() -> None:
    assert metric_names('sum by (instance, le) (rate(a_bucket{job="x",le=~"1|2"}[5m] offset 1d)) / b > 0.5') == {
        "a_bucket",
        "b",
    }
    assert metric_names("histogram_quantile(0.99, c) and on (instance) d == 0") == {"c", "d"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, str]:
    """sample name -> family type, scraped from a clustered node with a write-ahead log."""
    from aegiskv.testing.localnode import LocalNode

    node = LocalNode(str(tmp_path_factory.mktemp("metrics-node")), ["--wal", "write"])
    try:
        assert node.health_address is not None
        host, port = node.health_address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        node.stop()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = family.type
    return samples


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "aegiskv-alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def check_expression(expression: str, exported: dict[str, str]) -> None:
    assert expression.count("(") == expression.count(")"), expression
    assert expression.count("{") == expression.count("}"), expression
    names = metric_names(expression)
    assert names, expression
    unknown = sorted(name for name in names if name not in exported and name not in _PROMETHEUS_OWN)
    assert not unknown, f"{unknown} are not exported by a node: {expression}"


def test_alert_rules_are_well_formed_and_name_only_exported_metrics(exported) -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names)
    # What the operator asked to be told about, each by at least one rule.
    covered = " ".join(rule["expr"] for rule in rules)
    for needed in (
        "up{",
        "aegis_memory_used_bytes",
        "aegis_evictions_total",
        "aegis_replication_lag_seconds",
        'result="error"',
    ):
        assert needed in covered, needed
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        check_expression(rule["expr"], exported)


def test_prometheus_example_config_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["aegiskv-alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "aegiskv" and job["metrics_path"] == "/metrics"
    services = compose_services()
    health_port = parse_address(dockerfile_env(dockerfile_instructions(ROOT / "Dockerfile"))["AEGIS_HEALTH_ADDR"])[1]
    assert job["static_configs"][0]["targets"] == [f"{name}:{health_port}" for name in services]


def test_grafana_dashboard_queries_name_only_exported_metrics(exported) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "aegiskv-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    for expression in expressions:
        check_expression(expression.replace("$__rate_interval", "5m"), exported)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)


def test_exported_metric_names_follow_prometheus_conventions(exported) -> None:
    for name, kind in exported.items():
        assert name.startswith(("aegis_", "process_", "python_")), name
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        if kind == "counter":
            assert name.endswith(("_total", "_created")), f"counter {name} must end in _total"
        elif kind == "histogram":
            family = re.sub(r"_(bucket|sum|count|created)$", "", name)
            assert family.endswith(("_seconds", "_bytes")), f"histogram {family} needs a base unit"
        else:
            assert not name.endswith("_total"), f"{kind} {name} must not end in _total"
        # Base units only: seconds and bytes, never milliseconds or kilobytes.
        assert not re.search(r"_(ms|milliseconds|microseconds|us|kb|mb|kib|mib|minutes|hours)(_|$)", name), name
