"""`/blend` (and the image option of `/imagine`): images members attach, checked before admission.

The bot never downloads an image: before the acknowledgement it checks only what Discord says about an attachment
(its content type, size and, for an image, width and height) and a link's shape and host (`core.images`); the
worker fetches and checks the bytes (`worker.fetch`). A `/blend` is an image prompt of its images and no text, at
the aspect its `dimensions` choose, so it is parsed, screened, admitted and queued as `/imagine` is.
"""

from __future__ import annotations

import discord
from discord import Interaction, app_commands
from discord.ext import commands

from bot import errors, submit
from bot.client import ImagineBot
from core.errors import ImageRefused
from core.images import Rules

DIMENSIONS = {"Portrait": "2:3", "Square": "1:1", "Landscape": "3:2"}
"""`/blend`'s dimensions -> the `--ar` it renders at."""


def attachment_link(attachment: discord.Attachment, rules: Rules) -> str:
    """The attachment's URL, when what Discord says about it fits the rules (the worker checks the bytes again).

    Raises:
        ImageRefused: not an image, too large in bytes or pixels, or a URL the rules refuse.
    """
    name = attachment.filename[:60]
    if not (attachment.content_type or "").startswith("image/"):
        raise ImageRefused(f"{name} is not an image: attach a PNG, JPEG, WebP or GIF")
    if attachment.size > rules.max_bytes:
        raise ImageRefused(f"{name} is {attachment.size / 2**20:.1f} MiB; the most accepted is "
                           f"{rules.max_bytes / 2**20:g} MiB")
    if attachment.width and attachment.height and attachment.width * attachment.height > rules.max_pixels:
        raise ImageRefused(f"{name} is {attachment.width}x{attachment.height} pixels; the most accepted is "
                           f"{rules.max_pixels:,} pixels")
    rules.check_url(attachment.url)
    return attachment.url


class Images(commands.Cog):
    """`/blend`."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="blend", description="Blend two to five images into new ones")
    @app_commands.describe(dimensions="the shape of the images (default Square)")
    @app_commands.choices(dimensions=[app_commands.Choice(name=n, value=n) for n in DIMENSIONS])
    async def blend(
        self,
        interaction: Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        dimensions: str = "Square",
    ) -> None:
        async with errors.answer_within():
            given = [image for image in (image1, image2, image3, image4, image5) if image is not None]
            links = [attachment_link(image, self.bot.image_rules) for image in given]
            text = " ".join([*links, f"--ar {DIMENSIONS.get(dimensions, '1:1')}"])
            admitted, specs = await submit.admit_prompt(self.bot, interaction, text)
        await submit.start_admitted(self.bot, interaction, admitted, specs, label="Blend")


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ImagineBot)
    await bot.add_cog(Images(bot))
