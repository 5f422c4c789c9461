"""`/describe`: four prompts for an image, and the buttons under them.

    /describe image:<attachment>   or   /describe link:<https://cdn.discordapp.com/...>

The bot checks the image's link (and what Discord says about an attachment) and admits a `describe` job like any
other (suspension, ban, rate and queue limits; it is charged the device time the describer takes). The worker
fetches the image and answers with it and four numbered prompts (`worker.images.describe`). Under them, 1️⃣-4️⃣ run
`/imagine` with that prompt and Imagine all with all four, through `/imagine`'s own admission; 🔄 describes again
with another seed for four new prompts.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import discord
import redis
from discord import Interaction, app_commands
from discord.ext import commands

import quotas
from bot import aredis, errors, members, screening, submit
from bot.buttons import JobButton, template_of
from bot.client import ImagineBot
from bot.images import attachment_link
from core import jobs, keys, prompt, usersettings
from core.buttons import DESCRIBE_ACTIONS, ButtonRef
from core.errors import ImageRefused, JobExpired
from core.images import all_prompts, images_of
from core.spec import JobSpec
from quotas import Admission


async def admit_describe(bot: ImagineBot, interaction: Interaction, link: str) -> tuple[Admission, list[JobSpec]]:
    """Parse `link` as a one-image prompt, screen it and admit its describe job.

    Raises:
        ImageRefused, Suspended, Banned, RateLimited, TooManyJobs, QuotaExceeded, TierLimit: refused, nothing queued.
    """
    with bot.before_ack():
        who, now = members.who(interaction), time.time()
        quotas.check_place(who)
        settings_read = ("HGETALL", keys.user_settings(members.owner_of(interaction.user.id)))
        replies = await aredis.read(bot.batcher, [settings_read, *screening.reads(interaction),
                                                  *quotas.reserve_reads(who)])
        saved = usersettings.from_hash(replies[0])
        specs = prompt.parse(link, bot.registry, default_mode=saved.mode, image_rules=bot.image_rules)
        specs = await screening.screen(bot.aredis, interaction, specs, {}, link, replies[1:3], now)
        return await submit.reserve(bot, who, specs, replies[3:], kind="describe", now=now,
                                    stealth=saved.stealth), specs


class Describe(commands.Cog):
    """`/describe`."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="describe", description="Four prompts for an image")
    @app_commands.describe(image="the image to describe", link="or a link to it (a Discord attachment's)")
    async def describe(self, interaction: Interaction, image: discord.Attachment | None = None,
                       link: str | None = None) -> None:
        async with errors.answer_within():
            if (image is None) == (link is None):
                raise ImageRefused("give /describe either an image or a link to one")
            url = attachment_link(image, self.bot.image_rules) if image is not None else str(link).strip()
            if not re.fullmatch(r"\S+", url):
                raise ImageRefused("the link must be one URL, with no spaces")
            admitted, specs = await admit_describe(self.bot, interaction, url)
        await submit.start_admitted(self.bot, interaction, admitted, specs, label="Describe", kind="describe",
                                    source={})


def read_prompts(conn: redis.Redis, job_id: str) -> tuple[list[str], JobSpec | None]:
    """The prompts a describe job found and its spec (None when its record expired)."""
    raw = conn.get(keys.job_prompts(job_id))
    record = jobs.get(conn, job_id)
    return (json.loads(raw) if isinstance(raw, bytes) else []), (record.spec if record else None)


class DescribeButton(JobButton, template=template_of(*DESCRIBE_ACTIONS)):
    """1️⃣-4️⃣, Imagine all and 🔄 under a `/describe`."""

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        assert isinstance(bot, ImagineBot)
        try:
            await self.run(bot, interaction)
        except Exception as exc:  # a DynamicItem's errors never reach tree.on_error
            await bot.report(interaction, exc)

    async def run(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        ref: ButtonRef = self.ref
        async with errors.answer_within():
            prompts, spec = await bot.redis_call(read_prompts, ref.job_id)
            if ref.action == "redescribe":
                given = images_of(spec.extras) if spec is not None else None
                if given is None:
                    raise JobExpired("This description has expired; run /describe again.")
                admitted, specs = await admit_describe(bot, interaction, given.urls[0])
                job: dict[str, Any] = {"label": "Describe", "kind": "describe", "source": {"job_id": ref.job_id}}
            else:
                if not prompts:
                    raise JobExpired("These prompts have expired; run /describe again.")
                text = prompts[ref.index - 1] if ref.action == "prompt" else all_prompts(prompts)
                admitted, specs = await submit.admit_prompt(bot, interaction, text)
                job = {}  # /imagine's grids
        await submit.start_admitted(bot, interaction, admitted, specs, **job)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ImagineBot)
    await bot.add_cog(Describe(bot))
    bot.add_dynamic_items(DescribeButton)


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(DescribeButton)
