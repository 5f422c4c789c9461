"""docker-compose.yml holds the self-hosting promises: persistent, private Redis with least-privilege users; GPU
workers.

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


def test_redis_loads_the_acl_rendered_from_the_template_with_required_passwords(compose: dict[str, Any]) -> None:
    """Redis starts from the ACL file render-acl.sh writes from the mounted template (no --requirepass, no plain
    password in the command), and compose refuses to start without both users' passwords."""
    redis = compose["services"]["redis"]
    command = _command(redis)
    assert "--requirepass" not in command and "PASSWORD" not in command
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    template, script = mounts["/etc/redis/users.acl.template"], mounts["/etc/redis/render-acl.sh"]
    assert (ROOT / template).is_file() and (ROOT / script).is_file()
    assert all(v.endswith(":ro") for v in redis["volumes"] if v.startswith("./"))
    render = re.search(r"sh /etc/redis/render-acl\.sh /etc/redis/users\.acl\.template (\S+)", command)
    assert render and f"--aclfile {render.group(1)}" in command
    for name in ("REDIS_BOT_PASSWORD", "REDIS_WORKER_PASSWORD"):
        assert re.fullmatch(rf"\$\{{{name}:\?.+\}}", redis["environment"][name])


def test_acl_template_has_a_bot_and_a_worker_user_and_the_default_user_off() -> None:
    """The template defines exactly default (off), bot and worker; both are password-protected by hash, limited to
    the project's keys and channels, and deny @admin and @dangerous after their grants."""
    lines = [line.split() for line in (ROOT / "deploy/redis/users.acl.template").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    users = {words[1]: words[2:] for words in lines if words[0] == "user"}
    assert set(users) == {"default", "bot", "worker"}
    assert "off" in users["default"] and "on" not in users["default"]
    for name in ("bot", "worker"):
        rules = users[name]
        assert "on" in rules and f"#@{name.upper()}_PASSWORD_SHA256@" in rules and "nopass" not in rules
        assert {r for r in rules if r.startswith(("~", "%", "&"))} == {"~imagine:*", "~rq:*", "&imagine:*", "&rq:*"}
        assert "+@all" not in rules and "allkeys" not in rules and "allchannels" not in rules
        last_grant = max(i for i, r in enumerate(rules) if r.startswith("+"))
        assert {"-@admin", "-@dangerous"} <= set(rules[last_grant:])


def test_redis_is_not_published_beyond_localhost(compose: dict[str, Any]) -> None:
    """Every published Redis port is bound to 127.0.0.1: nobody outside the host can write to the queue."""
    for port in compose["services"]["redis"].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port


def test_redis_has_a_healthcheck_that_authenticates(compose: dict[str, Any]) -> None:
    """The healthcheck pings as the worker user with its password, so 'healthy' means the ACL loaded."""
    check = " ".join(compose["services"]["redis"]["healthcheck"]["test"])
    assert "ping" in check and "--user worker" in check and "REDIS_WORKER_PASSWORD" in check


@pytest.mark.parametrize("name", ["bot", "worker"])
def test_app_services_wait_for_a_healthy_redis(compose: dict[str, Any], name: str) -> None:
    """The bot and the workers start only once Redis reports healthy."""
    assert compose["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["bot", "worker"])
def test_app_services_require_the_discord_token_and_use_their_own_redis_user(compose: dict[str, Any], name: str
                                                                           ) -> None:
    """DISCORD_TOKEN is required (`:?`), and REDIS_URL logs in as the service's own ACL user with its password."""
    env = compose["services"][name]["environment"]
    assert re.fullmatch(r"\$\{DISCORD_TOKEN:\?.+\}", env["DISCORD_TOKEN"])
    assert re.fullmatch(rf"redis://{name}:\$\{{REDIS_{name.upper()}_PASSWORD:\?.+\}}@redis:6379/0", env["REDIS_URL"])


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


def test_web_app_runs_behind_its_profile_as_the_bot_user(compose: dict[str, Any]) -> None:
    """The web service runs `python -m web` (opt-in: the `web` profile) on the bot's Redis user, listens in the
    container and is published on localhost only (a TLS proxy goes in front), and is health-checked."""
    web = compose["services"]["web"]
    assert _command(web) == "python -m web" and web["profiles"] == ["web"]
    assert web["environment"]["REDIS_URL"].startswith("redis://bot:")
    assert web["environment"]["WEB_HOST"] == "0.0.0.0"
    assert all(str(port).startswith("127.0.0.1:") for port in web["ports"])
    assert "/healthz" in " ".join(web["healthcheck"]["test"])


def test_prometheus_scrapes_the_web_app_behind_the_metrics_profile(compose: dict[str, Any]) -> None:
    """Prometheus and Grafana start only with the `metrics` profile; Prometheus' mounted config scrapes the web
    app's /metrics; both are published on localhost only."""
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["metrics"]
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["web:8080"]


def test_grafana_dashboard_queries_only_exported_metrics(redis_conn: Any) -> None:
    """Every query of the provisioned Grafana dashboard names a series that `/metrics` exports (read from what the
    exporter declares, on an empty Redis)."""
    import json

    from web.metrics import exposition

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    declared = re.findall(r"^# TYPE (\S+) (\S+)$", exposition(redis_conn).decode(), flags=re.MULTILINE)
    exported = {name.removesuffix("_total") + suffix for name, kind in declared for suffix in suffixes[kind]}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/imagine.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bimagine_[a-z_]+", target["expr"])}
    assert queried and queried <= exported, queried - exported
