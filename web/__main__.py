"""`python -m web`: the web app on WEB_HOST:WEB_PORT, with Redis at REDIS_URL and Discord at DISCORD_API_BASE."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from core.queue import redis_location
from core.settings import AdminSettings, DiscordSettings, ModelSettings, RedisSettings
from quotas import TierSettings
from web.app import build_services, close_services, make_runner
from web.settings import WebSettings

log = logging.getLogger("web")


async def serve(settings: WebSettings, redis_url: str, api_base: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    async with aiohttp.ClientSession() as http:
        services = build_services(settings, redis_url=redis_url, api_base=api_base,
                                  registry=ModelSettings().registry(), tiers=TierSettings().config(),
                                  admins=AdminSettings(), http=http)
        runner = make_runner(services)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("listening on %s:%d for %s (redis at %s)", settings.host, settings.port, settings.public_url,
                 redis_location(redis_url))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
        await close_services(services)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = WebSettings()  # type: ignore[call-arg]  # from the environment
        redis_url = RedisSettings().redis_url
        api_base = DiscordSettings().discord_api_base
    except ValidationError as exc:
        log.error("bad configuration: %s", "; ".join(f"{_env_name(e['loc'])}: {e['msg']}" for e in exc.errors()))
        return 2
    asyncio.run(serve(settings, redis_url, api_base))
    return 0


def _env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a settings field (`session_secret` -> WEB_SESSION_SECRET)."""
    return "WEB_" + "_".join(str(part) for part in loc).upper()


if __name__ == "__main__":
    raise SystemExit(main())
