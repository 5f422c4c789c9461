"""docker-compose.yml holds the self-hosting promises: persistent, private, password-protected Redis; GPU workers.

There is no Docker engine on this machine, so the file is parsed and checked, not run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _command(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_redis_persists_to_a_volume_with_append_only_file(compose: dict[str, Any]) -> None:
    """Redis writes an append-only file onto a named volume, so queued jobs survive a restart."""
    redis = compose["services"]["redis"]
    assert "--appendonly yes" in _command(redis)
    mounts = {v.split(":")[1] for v in redis["volumes"]}
    assert "/data" in mounts
    assert redis["volumes"][0].split(":")[0] in compose["volumes"]


def test_redis_requires_a_password_that_must_be_set(compose: dict[str, Any]) -> None:
    """Redis starts with --requirepass from REDIS_PASSWORD, and compose refuses to start without it."""
    redis = compose["services"]["redis"]
    assert "--requirepass" in _command(redis)
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?.+\}", redis["environment"]["REDIS_PASSWORD"])


def test_redis_is_not_published_beyond_localhost(compose: dict[str, Any]) -> None:
    """Every published Redis port is bound to 127.0.0.1: nobody outside the host can write to the queue."""
    for port in compose["services"]["redis"].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port


def test_redis_has_a_healthcheck_that_authenticates(compose: dict[str, Any]) -> None:
    """The healthcheck pings with the password, so 'healthy' means reachable and authenticated."""
    check = compose["services"]["redis"]["healthcheck"]
    assert "ping" in " ".join(check["test"]) and "REDIS_PASSWORD" in " ".join(check["test"])


@pytest.mark.parametrize("name", ["bot", "worker"])
def test_app_services_wait_for_a_healthy_redis(compose: dict[str, Any], name: str) -> None:
    """The bot and the workers start only once Redis reports healthy."""
    assert compose["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["bot", "worker"])
def test_app_services_require_the_discord_token_and_use_the_password(compose: dict[str, Any], name: str) -> None:
    """DISCORD_TOKEN is required (`:?`), and REDIS_URL carries the Redis password."""
    env = compose["services"][name]["environment"]
    assert re.fullmatch(r"\$\{DISCORD_TOKEN:\?.+\}", env["DISCORD_TOKEN"])
    assert "${REDIS_PASSWORD" in env["REDIS_URL"] and env["REDIS_URL"].endswith("@redis:6379/0")


def test_worker_reserves_a_gpu_and_caches_models_on_a_volume(compose: dict[str, Any]) -> None:
    """The worker asks for an NVIDIA GPU and keeps downloaded weights on a named volume."""
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    cache = worker["environment"]["HF_HOME"]
    assert any(v.split(":")[1] == cache and v.split(":")[0] in compose["volumes"] for v in worker["volumes"])


def test_worker_gets_time_to_finish_its_job_on_stop(compose: dict[str, Any]) -> None:
    """`docker compose stop` leaves the worker minutes to finish the job it is running (SIGTERM is warm)."""
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert grace.endswith("m") and int(grace[:-1]) >= 1


def test_commands_run_the_project_entry_points(compose: dict[str, Any]) -> None:
    """The services run `python -m bot` and `python -m worker`, and those packages exist."""
    assert compose["services"]["bot"]["command"] == ["python", "-m", "bot"]
    assert compose["services"]["worker"]["command"] == ["python", "-m", "worker"]
    assert (ROOT / "worker" / "__main__.py").exists() or pytest.fail("worker/__main__.py is missing")
