"""Component interactions in the bot's namespace that no handler will take get an answer.

discord.py drops a click whose custom_id no registered `DynamicItem` matches, or that the clicked message does not
carry with that component type (a forged or outdated id), without answering: the member sees "This interaction
failed". For custom_ids starting with `imagine:` (ours) this listener answers ephemerally instead. Other ids are not
ours to answer and stay discord.py's.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord.ext import commands

from bot import account, buttons, describe, errors
from core.errors import MalformedInteraction

log = logging.getLogger(__name__)

NAMESPACE = "imagine:"
"""The prefix of every custom_id the bot and its workers put on a message."""

HANDLED_BY: tuple[type[discord.ui.DynamicItem[Any]], ...] = (*buttons.ALL_ITEMS, *account.DYNAMIC_ITEMS,
                                                             describe.DescribeButton)
"""The `DynamicItem`s that answer clicks on `imagine:` custom_ids."""

UNKNOWN = "This button or menu is not one this bot offers (any more); nothing was done."


def handled(custom_id: str, component_type: Any, message: discord.Message | None) -> bool:
    """Whether discord.py will run one of our items for this click: a template matches the custom_id and the message
    carries a component of that type with that id (`discord.ui.view.ViewStore.schedule_dynamic_item_call`)."""
    if message is None or not any(i.__discord_ui_compiled_template__.fullmatch(custom_id) for i in HANDLED_BY):
        return False
    view_cls = discord.ui.LayoutView if message.flags.components_v2 else discord.ui.View
    view = view_cls.from_message(message, timeout=None)
    return any(
        getattr(item, "custom_id", None) == custom_id and item.type.value == component_type
        for item in view.walk_children()
    )


async def answer_unknown(interaction: discord.Interaction) -> None:
    """`on_interaction`: answer a click on an `imagine:` custom_id that nothing else will."""
    if interaction.type is not discord.InteractionType.component:
        return
    data: dict[str, Any] = dict(interaction.data or {})
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id.startswith(NAMESPACE):
        return
    if handled(custom_id, data.get("component_type"), interaction.message):
        return
    log.warning("answered a click on unknown custom_id %r (interaction %s)", custom_id[:100], interaction.id)
    await errors.report(interaction, MalformedInteraction(UNKNOWN))


async def setup(bot: commands.Bot) -> None:
    bot.add_listener(answer_unknown, "on_interaction")


async def teardown(bot: commands.Bot) -> None:
    bot.remove_listener(answer_unknown, "on_interaction")
