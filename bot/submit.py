"""The flow `/imagine` and the buttons share: read, parse, screen, admit, acknowledge, then start each job.

    admitted, specs = await submit.admit_prompt(bot, interaction, text)       # parse, screen, admit: refusals raise
    await submit.start_admitted(bot, interaction, admitted, specs)           # defer, then one message and job each

Before the acknowledgement only what chooses between deferring and an ephemeral refusal runs. `/imagine` takes one
Redis round trip when it can: it plans on the replies this process last saw to its reads (the member's saved
settings, their suspension, the guild's moderation policy with its lists' revision, its tier policy, the member's
grant, the models' speeds; nothing, for a read never seen) and sends the admission script behind a guard that
checks those reads in Redis (`bot.aredis.guarded`); when Redis holds something else, the guard answers with what it
holds and the admission follows in a second round trip, as it always does for the buttons. Parsing, screening and
the tier checks in between are pure, and a refusal is only ever decided on what Redis holds. The Redis commands of
every interaction in the same event-loop turn share one round trip (`bot.aredis.Batcher`). The queue position, the
waiting text and the job's one atomic enqueue (its record, delivery and RQ's writes) come after the acknowledgement,
once no other interaction is waiting for its own (`ImagineBot.after_ack`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import discord
import redis

import quotas
from bot import aredis, members, screening
from bot.client import ImagineBot
from core import delivery as deliveries
from core import jobs, keys, queue, reposting, userjobs, usersettings
from core.buttonjobs import (
    FROM_STORED_IMAGE,
    ButtonJob,
    button_job,
    check_editable,
    check_upscale2x,
    prompt_to_edit,
    read_parent,
    with_edited_prompt,
)
from core.buttons import ASK_ACTIONS, REMIX_ACTIONS, ButtonRef
from core.errors import (
    QUEUE_UNREACHABLE,
    ImagineError,
    QuotaExceeded,
    TooManyJobs,
)
from core.spec import VARY_STRENGTH, JobSpec
from quotas import Admission, Who

log = logging.getLogger(__name__)


P = ParamSpec("P")
T = TypeVar("T")

ADMIT = aredis.Script(quotas.ADMIT_SCRIPT)
"""The admission script, run by its SHA."""

GUARDED_ADMIT = aredis.guarded(quotas.ADMIT_SCRIPT)
"""The admission script behind a check that the reads it was planned on are still what Redis holds."""

ENQUEUE = aredis.Script(queue.ENQUEUE_SCRIPT)
"""Recording and enqueueing a job, run by its SHA."""

RQ_QUEUE_PREFIX = "rq:queue:"
"""RQ's key for a queue's list of waiting job ids (`rq.Queue.redis_queue_namespace_prefix`)."""


# -- before the acknowledgement ----------------------------------------------------------------------------------


def _before_ack(admit: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Count the call as an interaction waiting for its acknowledgement (`ImagineBot.before_ack`)."""

    @functools.wraps(admit)
    async def counted(*args: P.args, **kwargs: P.kwargs) -> T:
        bot = args[0]
        assert isinstance(bot, ImagineBot)
        with bot.before_ack():
            return await admit(*args, **kwargs)

    return counted


@_before_ack
async def admit_prompt(
    bot: ImagineBot, interaction: discord.Interaction, text: str
) -> tuple[Admission, list[JobSpec]]:
    """Parse, screen and admit `/imagine`'s prompt: the admitted jobs' lane and ids, and their specs.

    Raises:
        PromptError, Suspended, PromptBlocked, TierLimit, Banned, RateLimited, TooManyJobs, QuotaExceeded: refused,
            nothing queued or charged. redis.RedisError: Redis is unreachable (nothing reserved).
    """
    who, now = members.who(interaction), time.time()
    quotas.check_place(who)  # image commands only in a server: a DM is no way around a server's ban or tier
    settings_read = ("HGETALL", keys.user_settings(members.owner_of(interaction.user.id)))
    reads = [settings_read, *screening.reads(interaction), *quotas.reserve_reads(who)]
    # 1. One round trip when Redis still holds what this process last saw (or nothing, for a read never seen):
    #    plan on that guess and send the admission behind a guard that checks it.
    assumed = bot.read_cache.assume(reads)
    try:
        specs, call = await plan_prompt(bot, interaction, text, who, aredis.as_replies(reads, assumed), now,
                                        record=False)
    except (ImagineError, screening.Unrecorded):  # a refusal on a guess: decide it on what Redis holds
        raw = await aredis.read_raw(bot.batcher, reads)
    else:
        answer = await admitting(bot, call, GUARDED_ADMIT.run(bot.batcher, call.keys,
                                                          [*aredis.guard_args(reads, assumed), *call.args]))
        if answer[0] != b"stale":
            return await admission_of(bot, who, call, answer, now), specs
        raw = answer[1]
    # 2. Otherwise plan on what Redis holds (its replies came back instead of the admission), then admit.
    bot.read_cache.learn(reads, raw)
    specs, call = await plan_prompt(bot, interaction, text, who, aredis.as_replies(reads, raw), now)
    return await admission_of(bot, who, call, await admitting(bot, call, ADMIT.run(bot.batcher, call.keys, call.args)),
                              now), specs


async def plan_prompt(
    bot: ImagineBot, interaction: discord.Interaction, text: str, who: Who, replies: list[Any], now: float,
    *, record: bool = True,
) -> tuple[list[JobSpec], quotas.AdmitCall]:
    """Parse and screen the prompt, and build its admission call, from the replies to the hot path's reads."""
    saved = usersettings.from_hash(replies[0])
    specs = parse_prompt(bot, text, saved)  # a PromptError is answered ephemerally by bot.errors
    specs = await screening.screen(bot.aredis, interaction, specs, saved.defaults, text, replies[1:3], now,
                                   record=record)
    return specs, quotas.plan_reserve(bot.tiers, who, specs, replies[3:], kind="grid", now=now,
                                      stealth=saved.stealth)


@dataclass(frozen=True)
class Remix:
    """The click's answer before admission: first open its prompt for editing (Remix mode, Vary (Region))."""

    prompt: str  # the prompt to show, as the job would run it


@_before_ack
async def admit_click(
    bot: ImagineBot, interaction: discord.Interaction, ref: ButtonRef, *, prompt: str | None = None, region: str = ""
) -> tuple[Admission, ButtonJob] | Remix:
    """Read the clicked job, screen and admit the job its button asks for, in the clicker's mode. Every click's prompt
    is screened against the guild's current lists and gets the safety settings of the channel clicked in. A job
    that starts from the clicked job's stored image follows the repost rules (`core.reposting.check_place`).

    `prompt`: the prompt the clicker edited (`core.buttonjobs.with_edited_prompt`); without one, a button in
    `REMIX_ACTIONS` answers `Remix` when the clicker's Remix mode is on, and Vary (Region) (which also takes the
    `region` chosen) and Custom Zoom always do.

    The job is admitted for what it renders: an Upscale (2x) at twice its source's sides (refused past the tier's
    or the model's pixel limit), a variation for the steps its strength runs, U1-U4 free while the image is stored
    and charged like a render of it once it expired.

    Raises:
        JobExpired: the clicked job's record is gone.
        RepostRefused: its image may not be re-sent here (another server, an age-restricted origin).
        TierLimit: also an Upscale (2x) past the model's largest upscale.
        EditRefused: an edit the model cannot make (`button_job`).
        PromptError: the edited prompt does not parse.
        Otherwise as `admit_prompt`.
    """
    who, now = members.who(interaction), time.time()
    quotas.check_place(who)
    settings_read = ("HGETALL", keys.user_settings(members.owner_of(interaction.user.id)))
    read, replies = await asyncio.gather(
        bot.redis_call(read_parent, ref),  # core.jobs reads with the sync client: in a thread, meanwhile
        aredis.read(bot.batcher, [settings_read, *screening.reads(interaction), *quotas.reserve_reads(who)]),
    )
    saved = usersettings.from_hash(replies[0])
    job = button_job(read.record, ref, saved.mode, registry=bot.registry, region=region)  # JobExpired, EditRefused
    check_editable(job, read)
    if prompt is None and ref.action in REMIX_ACTIONS and (saved.remix or ref.action in ASK_ACTIONS):
        return Remix(prompt_to_edit(job, ref.action))
    if prompt is not None:  # PromptError: answered ephemerally, nothing charged
        job = with_edited_prompt(job, ref.action, prompt, functools.partial(one_prompt, bot, saved=saved))
    if job.kind == "upscale2x":
        check_upscale2x(bot.registry, job.spec)
    if read.record is not None and job.kind in FROM_STORED_IMAGE:
        reposting.check_place(read.record.spec, read.origin, members.place(interaction, bot.admins))
    # Every click is screened against the guild's current lists and takes the safety settings of the channel it is
    # clicked in, U1-U4 too: an expired image is rendered again from the stored prompt (worker.kinds.source_image).
    (spec,) = await screening.screen(bot.aredis, interaction, [job.spec], {}, job.spec.prompt, replies[1:3], now)
    strength = VARY_STRENGTH.get(str(job.source.get("strength") or "strong"), 1.0) if job.kind == "vary" else 1.0
    admitted = await reserve(bot, who, [spec], replies[3:], kind=job.kind, now=now, strength=strength,
                             stored=read.stored, stealth=saved.stealth)
    return admitted, dataclasses.replace(job, spec=spec)


async def reserve(
    bot: ImagineBot, who: Who, specs: list[JobSpec], replies: list[Any], *, kind: str, now: float,
    strength: float = 1.0, stored: bool = True, stealth: bool = False,
) -> Admission:
    """`quotas.reserve` on the asyncio client: one round trip (`admission_of` for a refusal)."""
    call = quotas.plan_reserve(bot.tiers, who, specs, replies, kind=kind, now=now, strength=strength, stored=stored,
                               stealth=stealth)
    return await admission_of(bot, who, call, await admitting(bot, call, ADMIT.run(bot.batcher, call.keys, call.args)),
                              now)


async def admitting(bot: ImagineBot, call: quotas.AdmitCall, script: Awaitable[T]) -> T:
    """Await the admission script. When the wait is cut short (the 2 s before the acknowledgement ran out while
    Redis hung), the script may still run once Redis answers; when the connection broke, it may have run before
    Redis stopped without its answer reaching the bot (found by `python -m bench chaos`). Either way the member is
    told "try again", so the request's jobs are released once Redis answers (`release_later`): they are not held at
    their cap until the reservation backstop."""
    try:
        return await script
    except (asyncio.CancelledError, redis.ConnectionError, redis.TimeoutError):
        bot.background(release_later(bot, call.request.job_ids, recheck_s=quotas.RELEASE_RECHECK_S))
        raise


async def admission_of(bot: ImagineBot, who: Who, call: quotas.AdmitCall, answer: Any, now: float) -> Admission:
    """The admission the script answered. A refusal for places or fast time is checked once more after settling
    the member's jobs that ended unsettled (the sync `reserve` does that first, every time)."""
    try:
        return call.result(answer)
    except (TooManyJobs, QuotaExceeded):
        if not await bot.redis_call(quotas.reconcile_member, who.member, now=now):
            raise
    return call.result(await admitting(bot, call, ADMIT.run(bot.batcher, call.keys, call.args)))


def parse_prompt(bot: ImagineBot, text: str, saved: usersettings.UserSettings) -> list[JobSpec]:
    """The prompt's jobs under this bot's caps, the user's saved defaults and mode."""
    return usersettings.parse_prompt(text, saved, bot.registry, caps=bot.job_settings, image_rules=bot.image_rules)


def one_prompt(bot: ImagineBot, text: str, saved: usersettings.UserSettings) -> JobSpec:
    """The one job an edited prompt asks for.

    Raises:
        PromptError: it does not parse, or asks for several jobs.
    """
    return usersettings.one_job(parse_prompt(bot, text, saved))


# -- the acknowledgement, and after it ---------------------------------------------------------------------------


async def start_admitted(
    bot: ImagineBot,
    interaction: discord.Interaction,
    admitted: Admission,
    specs: list[JobSpec],
    *,
    label: str = "",
    kind: str = "grid",
    source: dict | None = None,
) -> None:
    """Acknowledge, then start each admitted job in the admitted lane; refund every job that did not get queued."""
    started = 0
    with bot.writing():  # close() waits for this
        try:
            await interaction.response.defer(thinking=True)
            async with bot.after_ack():
                for spec, job_id in zip(specs, admitted.job_ids, strict=True):
                    spec = dataclasses.replace(spec, mode=admitted.mode)
                    await start_job(bot, interaction, spec, original=started == 0, label=label, kind=kind,
                                    source=source, job_id=job_id, private=admitted.private)
                    started += 1
        except BaseException:
            try:
                await bot.redis_call(quotas.release_unqueued, admitted.job_ids[started:])
            except Exception as exc:  # Redis down, or the bot shutting down: try again once it is back
                log.warning("could not refund %d unqueued jobs (%s); trying again", len(admitted.job_ids) - started,
                            type(exc).__name__)
                bot.background(release_later(bot, admitted.job_ids[started:]))
            raise
    if admitted.tell:
        await interaction.followup.send(quotas.moved_to_relax_text(admitted), ephemeral=True)


async def release_later(bot: ImagineBot, job_ids: tuple[str, ...] | list[str], *, recheck_s: float = 0.0) -> None:
    """Refund unqueued jobs once Redis answers again: a member's fast time and running slot are not held for the
    ledger backstop's 15 minutes after a Redis outage (found by `python -m bench chaos`). With `recheck_s`, once
    more that long after the first refund."""
    with bot.writing():
        deadline = time.monotonic() + quotas.RELEASE_RETRY_FOR_S
        while time.monotonic() < deadline and not bot.is_closed():
            await asyncio.sleep(quotas.RELEASE_RETRY_S)
            try:
                await bot.redis_call(quotas.release_unqueued, job_ids)
                if recheck_s:
                    await asyncio.sleep(recheck_s)
                    await bot.redis_call(quotas.release_unqueued, job_ids)
            except redis.RedisError:
                continue
            log.info("refunded %d unqueued jobs after Redis came back", len(job_ids))
            return


async def start_job(
    bot: ImagineBot,
    interaction: discord.Interaction,
    spec: JobSpec,
    *,
    original: bool,
    label: str = "",
    kind: str = "grid",
    source: dict | None = None,
    job_id: str | None = None,
    private: bool = False,
) -> str:
    """Show the job's waiting message (the original response, or a follow-up), save its delivery, enqueue it.

    The message is written before the job is enqueued, so this edit can never land after one of the worker's.
    """
    owner = members.owner_of(interaction.user.id)
    ahead = await ahead_of_new(bot, spec, kind)
    text = waiting_text(spec, interaction.user.id, ahead, label)
    if original:
        await interaction.edit_original_response(content=text)
        message_id = ""  # the worker edits @original while the token lives
    else:
        message_id = str((await interaction.followup.send(text, wait=True)).id)
    try:
        delivery = delivery_for(interaction, message_id)
        return await enqueue(bot, spec, owner, delivery, interaction.token, kind=kind, source=source, job_id=job_id,
                             private=private)
    except redis.RedisError:
        failed = f"**{spec.prompt}** - <@{interaction.user.id}> (not queued: {QUEUE_UNREACHABLE.lower()})"
        if original:
            await interaction.edit_original_response(content=failed)
        raise


async def ahead_of_new(bot: ImagineBot, spec: JobSpec, kind: str) -> int:
    """How many jobs a worker takes before a job of `kind` put on its lane now (`core.queue.lanes_ahead`)."""
    counts = await bot.pipelined([("LLEN", RQ_QUEUE_PREFIX + lane) for lane in queue.lanes_ahead(spec, kind)])
    return sum(int(count) for count in counts)


def waiting_text(spec: JobSpec, user_id: int | str, ahead: int, label: str = "") -> str:
    """The job's message until the worker takes over: `**prompt** - <@user> (Waiting to start)` and its place."""
    what = f" - {label}" if label else ""
    place = "next in the queue" if ahead == 0 else f"queued, {ahead} ahead"
    return f"**{spec.prompt}**{what} - <@{user_id}> (Waiting to start) - {spec.mode}, {place}"


def delivery_for(interaction: discord.Interaction, message_id: str = "") -> deliveries.Delivery:
    """Where a job started by this interaction is shown."""
    return deliveries.Delivery(
        application_id=str(interaction.application_id),
        channel_id=str(interaction.channel_id or ""),
        user_id=str(interaction.user.id),
        guild_id=str(interaction.guild_id or ""),
        message_id=message_id,
    )


async def enqueue(
    bot: ImagineBot,
    spec: JobSpec,
    owner: str,
    delivery: deliveries.Delivery,
    interaction_token: str | None,
    *,
    kind: str = "grid",
    source: dict[str, Any] | None = None,
    job_id: str | None = None,
    private: bool = False,
) -> str:
    """Record the job with where its result goes and enqueue it, in one atomic step (`core.queue.enqueue_call`) on
    the asyncio client: a worker never sees a job without its delivery, and no failure leaves a record `queued`
    outside a queue. RQ's writes are RQ's own (recorded, then sent as one script).

    `job_id` is the id admission reserved GPU time for (`quotas.reserve`); a fresh one when None. Once sent, the
    step runs to its end even if the caller is cancelled (the bot shutting down), so that whoever refunds the
    job's reservation afterwards (`quotas.release_unqueued`) sees whether it was queued.

    Returns:
        The job id.

    Raises:
        redis.RedisError: Redis is unreachable.
        asyncio.CancelledError: the caller was cancelled; the job's outcome is settled in Redis by then.
    """
    job_id = job_id or jobs.new_job_id()
    writes = [*deliveries.save_writes(job_id, delivery, interaction_token=interaction_token),
              *userjobs.add_writes(owner, job_id)]
    call = queue.enqueue_call(spec, owner, job_id=job_id, kind=kind, source=source, writes=writes, private=private)
    return call.result(await run_to_end(ENQUEUE.run(bot.batcher, call.keys, call.args)))


async def run_to_end(step: Awaitable[T]) -> T:
    """`await step`, except that cancelling the caller does not cut it short: the step finishes, then the caller
    hears of the cancellation (or, when not cancelled, of the step's result or error)."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the step itself was cancelled (the event loop is closing)
                raise
            cancelled = True
        except Exception:  # the step's own error: raised below
            pass
    if cancelled:
        task.exception()  # retrieved: the cancellation is what the caller hears about
        raise asyncio.CancelledError
    return task.result()
