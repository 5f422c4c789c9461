"""`python -m worker`: load the model once, then take jobs from its lanes (`core.queue.LANES`) until stopped.

Here, once, the worker's `Context` is built (the warm engine, Redis, model, settings, name, Discord poster, image
safety check) and handed to `worker.rq_worker.ImagineWorker`, which passes it to every job (`worker.jobs`).

SIGTERM (or Ctrl-C) finishes the current job, then exits 0; a second one stops at once. `--burst` exits when the
queues are empty. Environment: REDIS_URL, MODEL / MODELS_FILE, DISCORD_TOKEN and DISCORD_API_BASE (where results
go), WORKER_* (see core/settings.py), and for tests only WORKER_TEST_STEP_DELAY_S (seconds to sleep after each
sampling step, to make a job slow enough to interrupt).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time

import redis

from core import keys, metrics, queue
from core.errors import ImagineError
from core.models import ModelRegistry
from core.prompt import parse
from core.settings import DiscordSettings, ImageSettings, ModelSettings, RedisSettings, WorkerSettings
from worker.context import Context, default_worker_name, register_stats

log = logging.getLogger("worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--name", default="", help="worker name (default: host.pid)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    redis_settings, model_settings, settings = RedisSettings(), ModelSettings(), WorkerSettings()
    discord = DiscordSettings()
    try:
        registry = model_settings.registry()
    except ImagineError as exc:
        log.error("%s", exc)
        return 2
    info = registry.get(settings.model) if settings.model else registry.default
    if info is None:
        log.error("WORKER_MODEL=%r is not in the registry (%s)", settings.model, ", ".join(registry.all_names()))
        return 2

    # Imported here: the engine (and the job function, which uses it) pulls in torch, which `--help` does not need.
    from model import loading
    from worker import describe as describers
    from worker.delivery import Poster
    from worker.discord_http import DiscordHTTP
    from worker.engine import Engine
    from worker.rq_worker import ImagineWorker
    from worker.safety import SafetySettings, describe, load, report

    image_settings = ImageSettings()
    started = time.monotonic()
    try:
        engine = Engine.load(info, device=settings.device, upscaler=settings.upscaler,
                             inpaint_unet=settings.inpaint_unet, ip_adapter=image_settings.ip_adapter,
                             dtype=settings.dtype, compile=settings.compile)
    except ImagineError as exc:
        with_upscaler = f" with upscaler {settings.upscaler}" if settings.upscaler else ""
        log.error("cannot load model %s%s: %s", info.name, with_upscaler, exc)
        return 1
    if settings.compile:  # compiled at the first call: pay for it now, not in the first member's job
        warm_s = engine.warm_up(parse("warm up", ModelRegistry((info,)))[0], settings.batch_size)
        log.info("compiled and warmed up the UNet in %.1f s", warm_s)
    load_s = time.monotonic() - started
    safety_settings = SafetySettings()
    try:
        classifier = load(safety_settings, device=str(engine.pipe.device))
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        describer = describers.load(image_settings, info, device=str(engine.pipe.device))
    except describers.DescriberUnavailable as exc:
        log.error("%s", exc)
        return 2
    log.info("loaded model %s (%s) in %.1f s; Upscale (2x): %s; image prompts: %s", info.name, info.source, load_s,
             f"upscaler {settings.upscaler}" if settings.upscaler else "Lanczos resize and img2img",
             f"IP-Adapter {image_settings.ip_adapter}" if engine.adapter else "img2img from the images")

    conn = redis.Redis.from_url(redis_settings.redis_url)
    name = args.name or default_worker_name()
    http = DiscordHTTP(discord.discord_api_base, discord.discord_token,
                       on_retry=lambda reason: metrics.count(conn, metrics.DISCORD_RETRIES, reason=reason))
    poster = Poster(http, models=(info,))
    if not poster.http.has_bot_token:
        log.warning("DISCORD_TOKEN is not set: results whose interaction token expired cannot be posted")
    ctx = Context(conn=conn, engine=engine, model=info, settings=settings, worker_name=name, poster=poster,
                  classifier=classifier, safety_threshold=safety_settings.threshold,
                  image_rules=image_settings.rules(), describer=describer)
    lanes = queue.lane_names(info.name)
    try:
        register_stats(ctx, pipeline_loads=loading.PIPELINE_LOADS, load_s=load_s,
                               upscaler_loads=loading.UPSCALER_LOADS)
        report(conn, name, classifier, now=time.time())  # for /admin moderation status
    except redis.RedisError as exc:
        log.error("cannot reach Redis at %s: %s", queue.redis_location(redis_settings.redis_url), exc)
        return 1
    log.info("worker %s: Redis at %s, queues %s", name, queue.redis_location(redis_settings.redis_url), lanes)
    log.info("worker %s: %s", name, describe(classifier))

    rq_worker = ImagineWorker.for_context(ctx)
    rq_worker.work(burst=args.burst, logging_level=args.log_level)
    with contextlib.suppress(redis.RedisError):
        conn.hdel(keys.safety_classifiers(), name)  # a stopped worker checks nothing: status must not count it
    log.info("worker %s: stopped", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
