"""The emulator's state written as Discord's JSON objects (the shapes of the OpenAPI *Response schemas)."""

from __future__ import annotations

import copy
import io
import time
from typing import Any

from PIL import Image

from discord_emulator.state import (
    ATTACHMENT_SIZE_LIMIT_BYTES,
    Attachment,
    Channel,
    Interaction,
    Member,
    Message,
    Role,
    State,
    User,
    iso,
)


def user(u: User) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": u.id,
        "username": u.username,
        "avatar": None,
        "discriminator": "0",
        "public_flags": 0,
        "flags": 0,
        "global_name": u.global_name,
        "primary_guild": None,
        "collectibles": None,
        "avatar_decoration_data": None,
        "banner": None,
        "accent_color": None,
    }
    if u.bot:
        out["bot"] = True
    return out


def me(u: User) -> dict[str, Any]:
    """GET /users/@me: the user plus the fields only its owner sees."""
    return {**user(u), "mfa_enabled": False, "locale": "en-US", "verified": True, "email": None}


def role(r: Role) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "permissions": str(r.permissions),
        "position": r.position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }


def member(m: Member, *, with_user: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "avatar": None,
        "banner": None,
        "communication_disabled_until": None,
        "flags": 0,
        "joined_at": iso(m.joined_at),
        "nick": m.nick,
        "pending": False,
        "premium_since": None,
        "roles": list(m.role_ids),
        "mute": False,
        "deaf": False,
    }
    if with_user:
        out["user"] = user(m.user)
    return out


def channel(c: Channel, state: State) -> dict[str, Any]:
    last = [m.id for m in state.channel_messages(c.id)]
    return {
        "id": c.id,
        "type": c.type,
        "guild_id": state.guild_id,
        "name": c.name,
        "position": c.position,
        "permission_overwrites": [dict(o) for o in c.overwrites],
        "nsfw": c.nsfw,
        "topic": None,
        "parent_id": None,
        "rate_limit_per_user": 0,
        "last_message_id": last[-1] if last else None,
        "flags": 0,
    }


def guild_create(state: State) -> dict[str, Any]:
    """The GUILD_CREATE dispatch for the one emulated guild (members included: the guild is small)."""
    return {
        "id": state.guild_id,
        "name": state.guild_name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": state.owner.id,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [role(r) for r in state.roles.values()],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "system_channel_id": state.default_channel.id,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "vanity_url_code": None,
        "description": None,
        "banner": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": None,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "joined_at": iso(state.members[state.bot.id].joined_at),
        "large": False,
        "unavailable": False,
        "member_count": len(state.members),
        "members": [member(m) for m in state.members.values()],
        "channels": [{k: v for k, v in channel(c, state).items() if k != "guild_id"} for c in state.channels.values()],
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def attachment(a: Attachment, message: Message, base_url: str) -> dict[str, Any]:
    url = f"{base_url}/attachments/{message.channel_id}/{a.id}/{a.filename}"
    out: dict[str, Any] = {"id": a.id, "filename": a.filename, "size": len(a.data), "url": url, "proxy_url": url}
    if a.content_type:
        out["content_type"] = a.content_type
    if a.description:
        out["description"] = a.description
    if message.ephemeral:
        out["ephemeral"] = True
    return out


def uploaded(a: Attachment, base_url: str) -> dict[str, Any]:
    """A file attached to a command option, as `resolved.attachments` carries it: an ephemeral attachment with its
    size, and for an image the width and height Discord reads from it."""
    url = f"{base_url}/attachments/uploads/{a.id}/{a.filename}"
    out: dict[str, Any] = {"id": a.id, "filename": a.filename, "size": len(a.data), "url": url, "proxy_url": url,
                           "ephemeral": True}
    if a.content_type:
        out["content_type"] = a.content_type
    try:
        with Image.open(io.BytesIO(a.data)) as image:
            out["width"], out["height"] = image.size
    except Exception:  # not an image: Discord sends no size either
        pass
    return out


def numbered_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Components as Discord echoes them: each gets a numeric `id` (1, 2, ... depth first) when it has none."""
    out = copy.deepcopy(components)
    counter = iter(range(1, 10_000))

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            item.setdefault("id", next(counter))
            walk(item.get("components", []))

    walk(out)
    return out


def message(m: Message, state: State, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "channel_id": m.channel_id,
        "type": m.type,
        "content": m.content,
        "author": user(m.author),
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": False,
        "attachments": [attachment(a, m, base_url) for a in m.attachments],
        "embeds": copy.deepcopy(m.embeds),
        "components": numbered_components(m.components),
        "timestamp": iso(m.created_at),
        "edited_timestamp": iso(m.edited_at) if m.edited_at else None,
        "flags": m.flags,
        "pinned": False,
        "tts": False,
    }
    for embed in out["embeds"]:
        embed.setdefault("type", "rich")
    if m.webhook_id:
        out["webhook_id"] = m.webhook_id
    if m.application_id:
        out["application_id"] = m.application_id
    interaction = state.interactions.get(m.interaction_id or "")
    if interaction is not None:
        out["interaction_metadata"] = {
            "id": interaction.id,
            "type": interaction.type,
            "user": user(interaction.user),
            "authorizing_integration_owners": {"0": state.guild_id},
        }
        if interaction.type == 3 and interaction.message_id:
            out["interaction_metadata"]["interacted_message_id"] = interaction.message_id
    return out


def application(state: State) -> dict[str, Any]:
    """GET /oauth2/applications/@me for the emulated bot's application."""
    return {
        "id": state.application_id,
        "name": state.bot.username,
        "icon": None,
        "description": "",
        "type": None,
        "bot": user(state.bot),
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "flags": 1 << 19,
        "flags_new": str(1 << 19),
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "owner": user(state.owner),
        "approximate_guild_count": 1,
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "explicit_content_filter": 0,
        "team": None,
        "eligible_oauth2_scopes": [],
        "rpc_origins": [],
        "integration_types_config": {"0": {}},
    }


def command(
    state: State, sent: dict[str, Any], existing: dict[str, Any] | None, guild_id: str | None
) -> dict[str, Any]:
    """An application command as stored after a bulk overwrite (id kept when the name already existed)."""
    out = {
        "id": existing["id"] if existing else state.ids.next(),
        "application_id": state.application_id,
        "version": state.ids.next(),
        # Discord takes the bitfield as a number or a string and answers with a string (discord.py sends a number).
        "default_member_permissions": _bitfield(sent.get("default_member_permissions")),
        "type": sent.get("type", 1),
        "name": sent["name"],
        "description": sent.get("description", ""),
        "options": sent.get("options", []),
        "nsfw": sent.get("nsfw", False),
        "contexts": sent.get("contexts"),
        "integration_types": sent.get("integration_types") or [0],
    }
    if guild_id:
        out["guild_id"] = guild_id
    else:
        out["dm_permission"] = sent.get("dm_permission", True)
    for key in ("name_localizations", "description_localizations"):
        if key in sent:
            out[key] = sent[key]
    return out


def interaction(state: State, i: Interaction, data: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The INTERACTION_CREATE payload Discord sends for a guild interaction."""
    c = state.channels[i.channel_id]
    out: dict[str, Any] = {
        "id": i.id,
        "application_id": state.application_id,
        "type": i.type,
        "data": data,
        "guild_id": state.guild_id,
        "guild": {"id": state.guild_id, "locale": "en-US", "features": []},
        "guild_locale": "en-US",
        "channel": {**channel(c, state), "permissions": str(state.channel_permissions(i.user.id, c.id))},
        "channel_id": c.id,
        "member": {**member(state.members[i.user.id]), "permissions": str(state.channel_permissions(i.user.id, c.id))},
        "token": i.token,
        "version": 1,
        "app_permissions": str(state.channel_permissions(state.bot.id, c.id)),
        "locale": "en-US",
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": {"0": state.guild_id},
        "context": 0,
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT_BYTES,
    }
    if i.message_id is not None:
        out["message"] = message(state.messages[i.message_id], state, base_url)
    return out


def ratelimit_headers(bucket: str, retry_after_s: float = 1.0, remaining: int = 49) -> dict[str, str]:
    """X-RateLimit-* headers as Discord sends them on every bucketed route (a roomy bucket: tests never wait)."""
    return {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + retry_after_s:.3f}",
        "X-RateLimit-Reset-After": f"{retry_after_s:.3f}",
        "X-RateLimit-Bucket": bucket,
    }


SUBCOMMAND_TYPES = (1, 2)
"""Option types SUB_COMMAND and SUB_COMMAND_GROUP: they nest the options of a command group."""


def command_options(
    state: State, command: dict[str, Any], path: list[str], values: dict[str, Any], invoker: str = "",
    base_url: str = "",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The `options` of a command interaction, nested under `path`'s subcommand group and subcommand, and the
    `resolved` users, members (with their permissions), roles and channels (with the `invoker`'s permissions
    there, as Discord sends them) that USER, ROLE and CHANNEL options name, and the attachments of ATTACHMENT
    options (an `Attachment`, stored as an upload the emulator serves at its `url`)."""
    declared = command.get("options", [])
    levels = []
    for name in path:
        sub = next((o for o in declared if o["name"] == name and o.get("type") in SUBCOMMAND_TYPES), None)
        if sub is None:
            raise ValueError(f"/{command['name']} has no subcommand {name!r} at this level")
        levels.append(sub)
        declared = sub.get("options", [])
    types = {o["name"]: o.get("type", 3) for o in declared}
    unknown = set(values) - set(types)
    if unknown:
        raise ValueError(f"/{' '.join([command['name'], *path])} has no option(s) {sorted(unknown)}; {sorted(types)}")
    resolved: dict[str, dict[str, Any]] = {}
    options = []
    for name, value in values.items():
        if types[name] == 6:  # USER: a member carries its member object, a stranger only its user
            found = value if isinstance(value, User) else state.users[str(value)]
            resolved.setdefault("users", {})[found.id] = user(found)
            if found.id in state.members:
                data = {
                    **member(state.members[found.id], with_user=False),
                    "permissions": str(state.permissions(found.id)),
                }
                resolved.setdefault("members", {})[found.id] = data
            value = found.id
        elif types[name] == 7:  # CHANNEL: a partial channel
            found_channel = value if isinstance(value, Channel) else state.channels[str(value)]
            resolved.setdefault("channels", {})[found_channel.id] = {
                "id": found_channel.id, "name": found_channel.name, "type": found_channel.type,
                "permissions": str(state.channel_permissions(invoker, found_channel.id)) if invoker else "0",
                "nsfw": found_channel.nsfw, "parent_id": None,
            }
            value = found_channel.id
        elif types[name] == 11:  # ATTACHMENT: the value is the attachment's id
            if not isinstance(value, Attachment):
                raise ValueError(f"option {name!r} is an attachment: pass a discord_emulator.Attachment")
            upload = Attachment(value.id or state.ids.next(), value.filename, value.data, value.content_type)
            state.uploads[upload.id] = upload
            resolved.setdefault("attachments", {})[upload.id] = uploaded(upload, base_url)
            value = upload.id
        elif types[name] == 8:  # ROLE
            found_role = value if isinstance(value, Role) else state.roles[str(value)]
            resolved.setdefault("roles", {})[found_role.id] = role(found_role)
            value = found_role.id
        options.append({"name": name, "type": types[name], "value": value})
    for sub in reversed(levels):
        options = [{"name": sub["name"], "type": sub["type"], "options": options}]
    return options, resolved


def _bitfield(value: Any) -> str | None:
    """A permissions bitfield as Discord returns it: a decimal string, or None."""
    return None if value is None else str(value)
