"""`python -m bot`: build the settings once, point discord.py at the configured API, run the bot until stopped."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

import discord
import discord.gateway
import discord.http
import pydantic
import yarl

from bot.client import ImagineBot, connect_redis, keep_tokens_out_of_logs
from core.errors import ImagineError
from core.queue import redis_location
from core.settings import (
    AdminSettings,
    DiscordSettings,
    ImageSettings,
    JobSettings,
    ModelSettings,
    RedisSettings,
)
from quotas import TierSettings

log = logging.getLogger("bot")


def fail(code: int, message: str) -> int:
    print(f"bot: {message}", file=sys.stderr)
    return code


def route_discord(settings: DiscordSettings) -> None:
    """Point discord.py's REST client and gateway at DISCORD_API_BASE / DISCORD_GATEWAY_URL (the emulator in tests)."""
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


GC_THRESHOLDS = (50_000, 50, 100)
"""Python's collector thresholds for the bot (the default is 700, 10, 10). Each interaction allocates a few thousand
short-lived objects (discord.py's payload objects, the prompt's spec, Redis replies): with the default, a burst of
200 runs hundreds of young-generation collections, each walking every young object, on the path to the
acknowledgements. `python -m bench interactions`, 200 at once, 7 runs alternating with the default on a quiet
machine: ack p99 ratio to the floor, median 1.47 against 1.61 (no `--cpu-hog`); with `--cpu-hog 2` no clear change
(1.51 against 1.41, 3 runs each, widely spread). Memory grows by at most the young objects between two collections
(tens of MB at most)."""


def tune_gc() -> None:
    """Move what start-up built out of the collector's sight (`gc.freeze`), and collect young objects less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="root log level (discord.py's token-bearing loggers stay "
                        "at INFO or above whatever this says)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_tokens_out_of_logs()
    try:
        discord_settings = DiscordSettings()
        redis_settings = RedisSettings()
        registry = ModelSettings().registry()
        job_settings = JobSettings()
        tiers = TierSettings().config()
        admins = AdminSettings()
        image_settings = ImageSettings()
    except pydantic.ValidationError as exc:
        return fail(2, f"invalid configuration: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
    except ImagineError as exc:
        return fail(2, str(exc))
    if discord_settings.discord_token is None or not discord_settings.discord_token.get_secret_value().strip():
        return fail(2, "DISCORD_TOKEN is not set: put the bot token from the Discord developer portal in it")
    route_discord(discord_settings)
    conn = connect_redis(redis_settings.redis_url)
    log.info("redis at %s; models: %s", redis_location(redis_settings.redis_url), ", ".join(registry.all_names()))
    bot = ImagineBot(
        settings=discord_settings,
        redis_conn=conn,
        registry=registry,
        job_settings=job_settings,
        tiers=tiers,
        admins=admins,
        image_settings=image_settings,
    )
    tune_gc()
    try:
        asyncio.run(_run(bot, discord_settings.discord_token.get_secret_value()))
    except discord.LoginFailure:
        return fail(1, "Discord rejected DISCORD_TOKEN: reset the token in the developer portal and set it again")
    except discord.PrivilegedIntentsRequired:
        return fail(1, "Discord refused the gateway intents this bot asks for; enable them in the developer portal")
    except KeyboardInterrupt:
        return 0
    return 0


async def _run(bot: ImagineBot, token: str) -> None:
    # `docker stop` sends SIGTERM: close the gateway and the HTTP session cleanly instead of dying mid-request.
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(bot.close()))
    async with bot:
        await bot.start(token)


if __name__ == "__main__":
    sys.exit(main())
