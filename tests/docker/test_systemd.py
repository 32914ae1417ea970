"""docker/systemd: the units parsed strictly and checked for what the README promises (SIGTERM to
the main process only, always restarted, migrated first, secrets as credentials, hardened), and
`systemd-analyze verify` where systemd is installed (skipped otherwise, in CI too: a container
need not have systemd).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "docker" / "systemd"
LONG_RUNNING = {
    "callpush-web.service": ["web", "--bind", "0.0.0.0:8080"],
    "callpush-worker-ring.service": ["worker", "--queues", "ring"],
    "callpush-worker-bulk.service": ["worker", "--queues", "bulk"],
    "callpush-beat.service": ["beat"],
}
MIGRATE = "callpush-migrate.service"
ALL_SERVICES = (*LONG_RUNNING, MIGRATE)
SECTIONS = {"Unit", "Service", "Install"}

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """A unit file as {section: {key: [values in order]}}.  Strict: anything but a comment, a
    known section header or `Key=value` inside a section is an error; keys may repeat (systemd
    allows it for Environment=, LoadCredential=, ...)."""
    unit: Unit = {}
    section = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{number}"
        if not line.strip() or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{where}: no continuation lines"
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            assert section in SECTIONS, f"{where}: unknown section {section}"
            assert section not in unit, f"{where}: section {section} twice"
            unit[section] = {}
            continue
        pair = re.fullmatch(r"([A-Z][A-Za-z]+)=(.*)", line)
        assert pair and section, f"{where}: not Key=value in a section: {line!r}"
        unit[section].setdefault(pair.group(1), []).append(pair.group(2))
    return unit


def _one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}: {values}"
    return values[0]


def _words(unit: Unit, section: str, key: str) -> set[str]:
    return {word for value in unit[section].get(key, []) for word in value.split()}


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {name: parse_unit(SYSTEMD / name) for name in ALL_SERVICES}


def test_the_parser_is_strict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nnot a setting\n")
    with pytest.raises(AssertionError, match="not Key=value"):
        parse_unit(bad)


def test_long_running_services(units: dict[str, Unit]) -> None:
    for name, command in LONG_RUNNING.items():
        unit = units[name]
        exec_start = _one(unit, "Service", "ExecStart").split()
        assert exec_start[0] == "/opt/callpush/bin/callpush", name
        assert exec_start[1 : 1 + len(command)] == command, name
        # README, "Stopping" and "Restarting".
        assert _one(unit, "Service", "KillMode") == "mixed", name
        assert _one(unit, "Service", "Restart") == "always", name
        assert int(_one(unit, "Service", "TimeoutStopSec")) >= 30, name
        # Migrated first.
        assert MIGRATE in _words(unit, "Unit", "Requires"), name
        assert MIGRATE in _words(unit, "Unit", "After"), name
        assert _words(unit, "Install", "WantedBy") == {"callpush.target"}, name


def test_workers_wait_for_their_tasks(units: dict[str, Unit]) -> None:
    # Celery's warm shutdown: a ring being retried ends with the ring.
    for name in ("callpush-worker-ring.service", "callpush-worker-bulk.service"):
        assert int(_one(units[name], "Service", "TimeoutStopSec")) >= 60, name


def test_migrate_runs_once(units: dict[str, Unit]) -> None:
    unit = units[MIGRATE]
    assert _one(unit, "Service", "Type") == "oneshot"
    # Active after its exit, so the services that Require= it start (and stay up).
    assert _one(unit, "Service", "RemainAfterExit") == "yes"
    assert _one(unit, "Service", "ExecStart").split()[1:] == ["db", "upgrade"]
    assert "Restart" not in unit["Service"]
    assert "TimeoutStartSec" in unit["Service"]


def test_the_target_starts_everything() -> None:
    target = parse_unit(SYSTEMD / "callpush.target")
    assert _words(target, "Unit", "Wants") == set(ALL_SERVICES)
    assert _words(target, "Install", "WantedBy") == {"multi-user.target"}


def test_hardening_and_user(units: dict[str, Unit]) -> None:
    for name, unit in units.items():
        service = unit["Service"]
        assert _one(unit, "Service", "User") == "callpush", name
        assert _one(unit, "Service", "Group") == "callpush", name
        assert _one(unit, "Service", "EnvironmentFile") == "/etc/callpush/callpush.env", name
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "CapabilityBoundingSet": "",
        }.items():
            assert service.get(key) == [value], f"{name}: {key}"
    # Under ProtectSystem=strict only beat writes outside /tmp: its schedule file, in its
    # state directory.
    beat = units["callpush-beat.service"]
    assert _one(beat, "Service", "WorkingDirectory") == "/var/lib/" + _one(
        beat, "Service", "StateDirectory"
    )


def test_secrets_are_credentials(units: dict[str, Unit]) -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    compose_env = compose["services"]["web"]["environment"]
    compose_files = {k for k in compose_env if k.endswith("_FILE") or k == "CALLPUSH_CONFIG"}
    for name, unit in units.items():
        credentials = {}
        for value in unit["Service"]["LoadCredential"]:
            credential, source = value.split(":", 1)
            assert source == f"/etc/callpush/credentials/{credential}", f"{name}: {value}"
            credentials[credential] = source
        environment = dict(value.split("=", 1) for value in unit["Service"]["Environment"])
        assert compose_files | {"CALLPUSH_BROKER_PASSWORD_FILE"} <= set(environment), name
        for key, value in environment.items():
            assert key.endswith("_FILE") or key == "CALLPUSH_CONFIG", f"{name}: {key}"
            # %d: this service's credentials directory (systemd.exec(5)).
            assert value.startswith("%d/"), f"{name}: {key}"
            assert value.removeprefix("%d/") in credentials, f"{name}: {key}"
            if key in compose_env:
                assert Path(value).name == Path(compose_env[key]).name, f"{name}: {key}"
        assert ("CALLPUSH_ADMIN_TOKEN_FILE" in environment) == (name == "callpush-web.service"), (
            name
        )


def test_environment_file_example_holds_no_secret() -> None:
    lines = (SYSTEMD / "callpush.env.example").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert {"CALLPUSH_DATABASE_URL", "CALLPUSH_BROKER_URL"} <= set(settings)
    for key, value in settings.items():
        assert not re.search(r"PASSWORD|SECRET|TOKEN", key), key
        assert not re.search(r"://[^/@]*:[^/@]*@", value), key


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (no systemd here)")
    # verify refuses an ExecStart= that does not exist: point it at this checkout's callpush.
    callpush = Path(sys.executable).parent / "callpush"
    assert callpush.exists(), "pip install -e . installs the callpush command"
    names = [*ALL_SERVICES, "callpush.target"]
    for name in names:
        text = (SYSTEMD / name).read_text().replace("/opt/callpush/bin/callpush", str(callpush))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(f"./{name}" for name in names)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    # Unknown keys and unparsable values are only warnings (exit 0): any line about these
    # units fails the test.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "callpush" in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr
