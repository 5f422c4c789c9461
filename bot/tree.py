"""The command tree: a slash command's options are checked against the command before discord.py parses them.

discord.py trusts Discord to send what was synced. When it does not (a command the bot no longer has, an option
missing, unknown or of another type, a `value` that is absent), discord.py either hands the handler an `int` for a
`str`, raises `CommandSignatureMismatch` (which reads like a bug of ours) or raises outside its error handling, so the
member is left with "This interaction failed". `CheckedTree.interaction_check` answers each of these ephemerally
(`core.errors.MalformedInteraction`) and runs nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import discord
from discord import AppCommandOptionType, app_commands

from bot import errors
from core.errors import MalformedInteraction

STRING_OPTION_MAX_CHARS = 6000
"""Discord's limit on a STRING option's value, in characters."""

SNOWFLAKE_DIGITS_MAX = 20
"""The most decimal digits a Discord id (a 64-bit integer) has."""

SUBCOMMAND_TYPES = (AppCommandOptionType.subcommand.value, AppCommandOptionType.subcommand_group.value)

RESOLVED_SECTIONS: dict[AppCommandOptionType, tuple[str, ...]] = {
    AppCommandOptionType.user: ("users",),
    AppCommandOptionType.channel: ("channels",),
    AppCommandOptionType.role: ("roles",),
    AppCommandOptionType.mentionable: ("users", "roles"),
    AppCommandOptionType.attachment: ("attachments",),
}
"""Where the `resolved` data of an interaction holds the object an id-valued option names."""

log = logging.getLogger(__name__)

RETRY = "Run it again from Discord's command list."


def mend_select(interaction: discord.Interaction) -> None:
    """Mend a select interaction's payload so that discord.py can read it. Discord sends `values` as a list of
    strings; with a forged `values` (null, a number, an object) discord.py raises in the task that runs the
    select's item, so the member is never answered. Call it from the item's `from_custom_id`, which discord.py runs
    first: anything but a list keeps no value, and a list keeps its strings."""
    data = interaction.data
    if isinstance(data, dict):
        raw = data.get("values")
        values = [v for v in raw if isinstance(v, str)] if isinstance(raw, list) else []
        data["values"] = values  # type: ignore[typeddict-unknown-key]


class CheckedTree(app_commands.CommandTree):
    """discord.py's tree, refusing chat-input commands whose options do not fit the command the bot has."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if interaction.type is not discord.InteractionType.application_command:
            return True
        data: dict[str, Any] = dict(interaction.data or {})
        if data.get("type", 1) != 1:  # a context menu: discord.py checks its target itself
            return True
        problem = malformed(_command(interaction), data)
        if problem is None:
            return True
        log.warning("refused malformed interaction %s (/%s): %s", interaction.id, str(data.get("name"))[:32], problem)
        await errors.report(interaction, MalformedInteraction(f"{problem} {RETRY}"))
        return False


def _command(interaction: discord.Interaction) -> app_commands.Command[Any, ..., Any] | None:
    """The command discord.py would run, or None (it has none, or the data names none it can find)."""
    try:
        command = interaction.command
    except (KeyError, TypeError, AttributeError, discord.DiscordException):  # data shaped unlike Discord's
        return None
    return command if isinstance(command, app_commands.Command) else None


def malformed(command: app_commands.Command[Any, ..., Any] | None, data: dict[str, Any]) -> str | None:
    """What is wrong with a chat-input interaction's options for `command` (the one the data names), in words for
    the member; None when they fit its parameters. The words name only the command's own parameters, never what the
    payload carried."""
    if command is None:
        return "This bot has no such command (any more)."
    options = _leaf_options(data.get("options", []))
    if options is None:
        return "That command arrived malformed."
    resolved = data.get("resolved", {})
    if not isinstance(resolved, dict):
        return "That command arrived malformed."
    parameters = {p.display_name: p for p in command.parameters}
    seen: set[str] = set()
    for option in options:
        if not isinstance(option, dict) or not isinstance(option.get("name"), str) or "value" not in option:
            return "That command arrived malformed."
        parameter = parameters.get(option["name"])
        if parameter is None or parameter.display_name in seen:
            return f"/{command.qualified_name} has no such option (or got one twice)."
        seen.add(parameter.display_name)
        if option.get("type") != parameter.type.value or not _fits(parameter, option["value"], resolved):
            return f"/{command.qualified_name}'s option `{parameter.display_name}` arrived malformed."
    missing = [p.display_name for p in command.parameters if p.required and p.display_name not in seen]
    if missing:
        return f"/{command.qualified_name} needs `{missing[0]}`."
    return None


def _leaf_options(options: Any) -> list[Any] | None:
    """The options under the subcommand (group) the data names; None when they are not a list, or a subcommand
    shares its level with other options."""
    while True:
        if not isinstance(options, list):
            return None
        subs = [o for o in options if isinstance(o, dict) and o.get("type") in SUBCOMMAND_TYPES]
        if not subs:
            return options
        if len(options) != 1:
            return None
        options = subs[0].get("options", [])


def _fits(parameter: app_commands.Parameter, value: Any, resolved: dict[str, Any]) -> bool:
    """Whether an option's value is one Discord could send for the parameter: its JSON type, its bounds, and for ids
    the object in `resolved`. Choices are left to the handlers, which name the ones they take."""
    kind = parameter.type
    if kind is AppCommandOptionType.string:
        if not isinstance(value, str) or len(value) > STRING_OPTION_MAX_CHARS:
            return False
        if parameter.min_value is not None and len(value) < parameter.min_value:
            return False
        if parameter.max_value is not None and len(value) > parameter.max_value:
            return False
    elif kind is AppCommandOptionType.boolean:
        return isinstance(value, bool)
    elif kind in (AppCommandOptionType.integer, AppCommandOptionType.number):
        numeric = (int,) if kind is AppCommandOptionType.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric) or not math.isfinite(value):
            return False
        if parameter.min_value is not None and value < parameter.min_value:
            return False
        if parameter.max_value is not None and value > parameter.max_value:
            return False
    elif kind in RESOLVED_SECTIONS:
        text = str(value)
        if isinstance(value, bool) or not (text.isascii() and text.isdigit() and len(text) <= SNOWFLAKE_DIGITS_MAX):
            return False
        sections = [resolved.get(name) for name in RESOLVED_SECTIONS[kind]]
        return any(isinstance(section, dict) and text in section for section in sections)
    else:
        return False
    return True
