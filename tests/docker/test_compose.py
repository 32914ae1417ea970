"""docker/compose.yaml and docker/Dockerfile: the structure a deployment relies on.

No Docker engine is needed: the files are parsed, and validated by Compose v1 (`docker-compose
config`, Debian's 1.29: required, `.ci/run` installs it), by the Compose Specification's JSON
schema (what Compose v2 validates a file against: always), and by Compose v2 itself (`docker
compose config`) where that plugin is installed.  No Compose v2 binary is packaged for Debian 12
or on PyPI, so the schema is the check CI always runs.

``compose-spec.json`` is ``schema/compose-spec.json`` of https://github.com/compose-spec/compose-spec
(Apache-2.0) at commit 170098b, copied unchanged; refresh it from there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse compose.yaml")

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE_SPEC_SCHEMA = Path(__file__).with_name("compose-spec.json")

CALLPUSH_SERVICES = ("web", "worker-ring", "worker-bulk", "beat")
ALL_SERVICES = (*CALLPUSH_SERVICES, "migrate", "redis", "postgres")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the << merge keys
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def test_all_services_present(services: dict[str, Any]) -> None:
    assert set(ALL_SERVICES) <= set(services)


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    # migrate is a one-shot job: "healthy" means nothing for it; others wait for its exit 0.
    for name in (*CALLPUSH_SERVICES, "redis", "postgres"):
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
    assert "healthcheck" not in services["migrate"]


def test_callpush_services_run_one_image(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in (*CALLPUSH_SERVICES, "migrate")}
    assert len(images) == 1
    builds = {
        (services[name]["build"]["context"], services[name]["build"]["dockerfile"])
        for name in (*CALLPUSH_SERVICES, "migrate")
    }
    assert builds == {("..", "docker/Dockerfile")}


def test_commands(services: dict[str, Any]) -> None:
    def command(name: str) -> list[str]:
        value: list[str] = services[name]["command"]
        return value

    assert command("web")[0] == "web"
    assert command("beat") == ["beat"]
    assert command("migrate") == ["db", "upgrade"]
    for name, queue in (("worker-ring", "ring"), ("worker-bulk", "bulk")):
        args = command(name)
        assert args[0] == "worker"
        assert args[args.index("--queues") + 1] == queue, f"{name} must serve only {queue}"
        assert queue in " ".join(services[name]["healthcheck"]["test"])


def test_start_order(services: dict[str, Any]) -> None:
    for name in CALLPUSH_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    migrate = services["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate.get("restart") == "no"


def test_secrets_are_files_not_inline(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = compose["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"}, f"secret {name} must come from a file"
        assert not Path(secret["file"]).is_absolute()

    for name in (*CALLPUSH_SERVICES, "migrate"):
        service = services[name]
        env = service["environment"]
        assert set(service["secrets"]) >= {"apns_key.p8", "fcm_service_account.json"}
        assert env["CALLPUSH_APNS__KEY_FILE"] == "/run/secrets/apns_key.p8"
        assert env["CALLPUSH_FCM__SERVICE_ACCOUNT_FILE"] == "/run/secrets/fcm_service_account.json"
        # The Stream apps (api_secrets) arrive as a TOML secret file.
        assert env["CALLPUSH_CONFIG"] == "/run/secrets/stream_apps.toml"
        assert "stream_apps.toml" in service["secrets"]
        for key, value in env.items():
            assert "SECRET" not in key, f"{name}: {key} passes a secret inline"
            assert "PASSWORD" not in key or key.endswith("_FILE"), f"{name}: {key} is inline"
            # No URL carries a password: it comes from a secret file (*_PASSWORD_FILE).
            assert not re.search(r"://[^/@]*:[^/@]*@", str(value)), f"{name}: {key}"
        assert env["CALLPUSH_DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
        for path_value in (v for k, v in env.items() if k.endswith("_FILE")):
            assert path_value.startswith("/run/secrets/")
            assert Path(path_value).name in service["secrets"]

    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"]


def test_no_top_level_name(compose: dict[str, Any]) -> None:
    # Compose v1 (Debian's docker-compose 1.29) refuses a top-level `name:`; the project name
    # comes from COMPOSE_PROJECT_NAME in docker/.env instead.
    assert "name" not in compose
    assert _env_example()["COMPOSE_PROJECT_NAME"] == "callpush"


def test_env_example_sets_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    assert required, "compose.yaml requires its ids from docker/.env"
    assert required <= set(_env_example())
    assert not any("PASSWORD" in name or "SECRET" in name for name in _env_example())


def _env_example() -> dict[str, str]:
    lines = (DOCKER / "env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def test_urls_come_from_the_environment(services: dict[str, Any]) -> None:
    env = services["web"]["environment"]
    assert env["CALLPUSH_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["CALLPUSH_DATABASE_URL"]
    assert env["CALLPUSH_BROKER_URL"].startswith("redis://redis:6379/")


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage: build, then runtime"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"pip wheel", text)
    # The last USER is not root.
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["callpush"\]$', text, re.M)
    assert re.search(r'^CMD \["web"\]$', text, re.M)
    # Every file the build copies from the context passes the dockerignore allow-list.
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text()
    for source in re.findall(r"^COPY (?!--from)(?:--\S+\s+)*(.+)\s+\S+$", text, re.M):
        for path in source.split():
            assert f"!{path.rstrip('/').removeprefix('./')}" in ignore, path


def test_healthcheck_script_is_valid_python() -> None:
    source = (DOCKER / "healthcheck.py").read_text()
    compile(source, "healthcheck.py", "exec")


def _compose_v2() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [docker, "compose"] if probe.returncode == 0 else None


def _compose_config(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``config`` on a copy of docker/ set up as the README says: docker/.env copied from
    env.example, and every secret file present (compose refuses the file otherwise; empty
    ones here)."""
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns(".env"))
    shutil.copy(copy / "env.example", copy / ".env")
    for secret in yaml.safe_load(COMPOSE.read_text())["secrets"].values():
        target = copy / secret["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    # Only docker/.env may supply the variables: none leak in from the caller's environment.
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [*command, "-f", str(copy / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_compose_v1_accepts_it(tmp_path: Path) -> None:
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        message = "docker-compose (Compose v1, Debian package docker-compose) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    result = _compose_config([docker_compose], tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    web = rendered["services"]["web"]["environment"]
    assert web["CALLPUSH_DATABASE_URL"] == "postgresql+psycopg://callpush@postgres:5432/callpush"
    assert web["CALLPUSH_APNS__KEY_ID"] == _env_example()["APNS_KEY_ID"]


def test_the_compose_specification_accepts_it(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SPEC_SCHEMA.read_text()))
    problems = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not problems
    # The schema does catch a mistake: an unknown service key is refused.
    broken = {**compose, "services": {**compose["services"], "web": {"restart_polcy": "always"}}}
    assert any("restart_polcy" in e.message for e in validator.iter_errors(broken))


def test_compose_v2_accepts_it(tmp_path: Path) -> None:
    command = _compose_v2()
    if command is None:
        pytest.skip(
            "the docker compose plugin (v2) is not installed: `docker compose config` not run"
        )
    result = _compose_config(command, tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["name"] == "callpush"
