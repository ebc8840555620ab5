"""docker-compose.yml: the Compose Specification schema, and that the stack fits together.

No Docker engine runs here, so `docker compose config` cannot; these tests check what it would
(the schema, interpolation of required variables) and what it would not (that services, ports,
healthchecks, mounts, settings and the README agree).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from serving.settings import Settings
from tests.delivery.conftest import ROOT, load_yaml, run, tool

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?([^}]*)\}")
ANY_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def example_env() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping (anchors merge into it)"
    return {str(k): str(v) for k, v in env.items()}


def test_matches_the_compose_specification_schema() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_has_every_service_the_issue_and_the_readme_name() -> None:
    names = set(services())
    assert {
        "api", "monitor", "redis", "mlflow", "postgres", "minio", "minio-init",
        "prometheus", "grafana", "trainer", "secrets-check",
    } <= names  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The stack", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE))
    assert documented == names, f"README table vs compose: {documented ^ names}"


def test_every_carprice_variable_is_a_real_setting() -> None:
    fields = set(Settings.model_fields)
    found = 0
    for name, service in services().items():
        for key in environment(service):
            if key.startswith("CARPRICE_"):
                found += 1
                assert key.removeprefix("CARPRICE_").lower() in fields, f"{name}: {key}"
    for key in example_env():
        if key.startswith("CARPRICE_"):
            assert key.removeprefix("CARPRICE_").lower() in fields, f".env.example: {key}"
    assert found >= 10


def test_api_runs_two_workers_with_a_fresh_multiprocess_dir_and_drains() -> None:
    api = services()["api"]
    command = api["command"]
    assert command[:2] == ["carprice", "serve"]
    assert int(command[command.index("--workers") + 1]) >= 2
    env = environment(api)
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    assert any(t.startswith("/tmp/prometheus:") for t in api["tmpfs"]), "tmpfs: empty each start"
    assert api["stop_signal"] == "SIGTERM"
    assert int(api["stop_grace_period"].rstrip("s")) > float(env["CARPRICE_SHUTDOWN_TIMEOUT"]) + 5


def test_only_the_api_runs_prometheus_in_multiprocess_mode() -> None:
    for name, service in services().items():
        assert ("PROMETHEUS_MULTIPROC_DIR" in environment(service)) == (name == "api"), name


def test_ports_are_coherent() -> None:
    svc = services()
    published: list[str] = []
    for name, service in svc.items():
        for port in service.get("ports", []):
            *host, container = str(port).split(":")
            published.append(host[-1])
            listens = listening_ports(name, service)
            assert int(container) in listens, f"{name} publishes {container}, listens {listens}"
    assert len(published) == len(set(published)), f"a host port published twice: {published}"
    # What Prometheus scrapes is what the services listen on.
    prometheus = load_yaml(ROOT / "monitoring/prometheus/prometheus.yml")
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    for target in targets:
        host, port = target.split(":")
        if host == "localhost":
            continue
        assert host in svc, f"Prometheus scrapes {target}: no such service"
        assert int(port) in listening_ports(host, svc[host]), target
    # Every URL one service gives another names a service and the port it listens on.
    for name, service in svc.items():
        for key, value in environment(service).items():
            for host, port in re.findall(r"//(?:[^@/]*@)?([a-z0-9-]+):(\d+)", value):
                assert host in svc, f"{name}.{key} points at {host}: no such service"
                assert int(port) in listening_ports(host, svc[host]), f"{name}.{key}"


def listening_ports(name: str, service: dict[str, Any]) -> set[int]:
    """The ports a service listens on: from its command, else its image's well-known ports."""
    command = " ".join(map(str, service.get("command", []) or []))
    ports = {int(p) for p in re.findall(r"--(?:port|console-address)[= ]:?(\d+)", command)}
    known = {"redis": 6379, "postgres": 5432, "minio": 9000, "prometheus": 9090, "grafana": 3000}
    image = str(service.get("image", ""))
    ports |= {port for key, port in known.items() if image.split("/")[-1].startswith(key)}
    assert ports, f"{name}: no known listening port"
    return ports


def test_healthchecks_are_coherent() -> None:
    svc = services()
    for name, service in svc.items():
        one_shot = service.get("restart") == "no"
        if not one_shot:
            assert "healthcheck" in service, f"{name} runs for good but has no healthcheck"
            assert service.get("restart") == "unless-stopped", name
        check = " ".join(map(str, service.get("healthcheck", {}).get("test", [])))
        for port in re.findall(r"127\.0\.0\.1:(\d+)", check):
            assert int(port) in listening_ports(name, service), f"{name} checks {port}"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in svc, f"{name} depends on {dependency}: no such service"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in svc[dependency], f"{name} waits on {dependency}'s health"
            if condition["condition"] == "service_completed_successfully":
                assert svc[dependency].get("restart") == "no", f"{dependency} must be one-shot"
    assert "/v2/health/live" in " ".join(svc["api"]["healthcheck"]["test"])


def test_volumes_are_coherent() -> None:
    data = compose()
    declared = set(data.get("volumes", {}))
    used = set()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source, target, *_ = volume.split(":")
            assert target.startswith("/"), f"{name}: {volume}"
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}: not in the repo"
            else:
                assert source in declared, f"{name} uses an undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared and never used: {declared - used}"
    prometheus = data["services"]["prometheus"]["volumes"]
    assert "./monitoring/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in prometheus
    rules = load_yaml(ROOT / "monitoring/prometheus/prometheus.yml")["rule_files"]
    mounted = {v.split(":")[1] for v in prometheus}
    for rule in rules:  # relative to the config file's directory
        assert str(Path("/etc/prometheus", rule)) in mounted, rule
    provider = load_yaml(ROOT / "monitoring/grafana/provisioning/dashboards/carprice.yml")
    mounts = data["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert f"./monitoring/grafana/dashboards:{path}:ro" in mounts


def test_required_variables_name_themselves_and_are_in_the_example() -> None:
    text = COMPOSE.read_text()
    required = REQUIRED.findall(text)
    assert required, "secrets must be ${VAR:?message}"
    example = example_env()
    for name, message in required:
        assert name in message, f"${{{name}:?...}}: the message must name {name}"
        assert name in example, f"{name} is required but not in .env.example"
    for name in ANY_VAR.findall(text):
        assert name in example, f"{name} is used but not in .env.example"
    # Every secret the stack takes is required, never defaulted.
    for name in example:
        if "PASSWORD" in name or "SECRET" in name:
            assert name in dict(required), f"{name} must be ${{{name}:?...}}"


def check_secrets(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = ROOT / "deploy/compose/check-secrets.sh"
    return subprocess.run(
        ["sh", str(script), str(ENV_EXAMPLE)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_the_stack_refuses_the_example_secrets_outside_development() -> None:
    example = example_env()
    refused = check_secrets({**example, "CARPRICE_ENV": "production"})
    assert refused.returncode == 1
    secret_names = [n for n in example if "PASSWORD" in n or "SECRET" in n]
    for name in secret_names:
        assert f"{name} still has the example value" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == len(secret_names)

    assert check_secrets({**example, "CARPRICE_ENV": "development"}).returncode == 0
    real = {**example, **{n: secrets.token_urlsafe(24) for n in secret_names}}
    accepted = check_secrets(real)
    assert accepted.returncode == 0, accepted.stderr
    empty = check_secrets({**real, "MINIO_ROOT_PASSWORD": ""})
    assert empty.returncode == 1
    assert "MINIO_ROOT_PASSWORD is empty" in empty.stderr
    services()["secrets-check"]  # and every long-running service waits for it:
    for name in ("api", "monitor", "postgres", "minio"):
        assert "secrets-check" in services()[name]["depends_on"], name


def test_make_env_writes_fresh_secrets_the_check_accepts(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text(ENV_EXAMPLE.read_text())
    made = run("python3", str(ROOT / "scripts/make_env.py"), str(tmp_path))
    assert made.returncode == 0, made.stderr
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["CARPRICE_JWT_SECRET"] != example_env()["CARPRICE_JWT_SECRET"]
    assert len(env["CARPRICE_JWT_SECRET"]) >= 32
    assert check_secrets(env).returncode == 0
    again = run("python3", str(ROOT / "scripts/make_env.py"), str(tmp_path))
    assert again.returncode == 1
    assert "exists" in again.stderr


@pytest.mark.postgres
def test_postgres_init_script_makes_two_separate_databases() -> None:
    suffix = secrets.token_hex(4)
    mlflow_db, app_db = f"mlflow_t{suffix}", f"carprice_t{suffix}"
    passwords = {"MLFLOW_DB_PASSWORD": 'it\'s a "pw"', "APP_DB_PASSWORD": secrets.token_hex(8)}
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": "127.0.0.1",
        "POSTGRES_USER": "postgres",
        "MLFLOW_DB_NAME": mlflow_db,
        "APP_DB_NAME": app_db,
        **passwords,
    }
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    script = ROOT / "deploy/compose/postgres/init-databases.sh"
    try:
        done = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
        # Each role reaches its own database with its password (TCP, so passwords count when
        # the server asks for them) and is refused the other one.
        own = psycopg.connect(
            host="127.0.0.1", dbname=mlflow_db, user=mlflow_db,
            password=passwords["MLFLOW_DB_PASSWORD"], connect_timeout=3,
        )  # fmt: skip
        own.close()
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(
                host="127.0.0.1", dbname=app_db, user=mlflow_db,
                password=passwords["MLFLOW_DB_PASSWORD"], connect_timeout=3,
            )  # fmt: skip
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for db in (mlflow_db, app_db):
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                admin.execute(f'DROP ROLE IF EXISTS "{db}"')
