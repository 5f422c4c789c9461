"""What `/admin` does, as plain functions of plain values: authorise, validate, change, audit, answer in words.

The cog (`bot.admin`) only turns an interaction into a `Caller` (and `Target`s) and calls `run`, which checks the
caller's rights on every call, whatever Discord's default command permissions say (server owners can override
those), then runs one operation. Each operation validates everything before it changes anything, and appends
what it changed to the guild's audit log (`core.audit`). Bad input raises an `ImagineError` whose message is the
answer; nothing is changed then.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import redis

import quotas
from bot import myjobs
from bot.members import is_admin
from core import audit
from core.errors import AdminInputError, NotAdmin, TierConfigError
from core.settings import AdminSettings
from quotas import GuildPolicy, Tier, TiersConfig, apply_policy

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 200
MAX_SUBSCRIBE_CHARS = 1500
"""`/subscribe` text limit: Discord allows 2000 characters a message and the reply adds the tier list."""

LIMIT_FIELDS = tuple(f.name for f in fields(Tier) if f.name != "name")
"""The limits `/admin limits` can change (the fields of `quotas.quotas.Tier`)."""

RESET_WORDS = ("default", "reset")
"""A value that removes the guild's override and goes back to the deployment's."""


@dataclass(frozen=True)
class Caller:
    """Who ran an `/admin` command: from the interaction (ids and the permissions Discord computed for them)."""

    guild: str  # "" outside a server
    user: str
    role_ids: tuple[str, ...] = ()
    manage_guild: bool = False  # Manage Server or Administrator in the interaction's channel


@dataclass(frozen=True)
class Target:
    """The member an `/admin` command names; `is_member` is False for a user who is not in the server."""

    user: str
    role_ids: tuple[str, ...] = ()
    manage_guild: bool = False
    is_member: bool = True

    @property
    def mention(self) -> str:
        return f"<@{self.user}>"


def run(
    conn: redis.Redis, admins: AdminSettings, caller: Caller, command: str, op: Callable[..., str], *args: Any
) -> str:
    """Authorise `caller` for `/admin <command>`, then run `op(conn, caller, *args)`.

    Raises:
        NotAdmin: the caller has no admin rights (the attempt is logged and audited; nothing ran).
    """
    if not caller.guild:
        raise NotAdmin("/admin works only inside a server.")
    if not is_admin(caller.user, caller.role_ids, caller.manage_guild, admins):
        log.warning("refused /admin %s from user %s in guild %s: not an admin", command, caller.user, caller.guild)
        audit.record(conn, caller.guild, caller.user, "denied", command, "no Manage Server permission or admin role")
        raise NotAdmin("You need the Manage Server permission (or an admin role of this bot) to use /admin.")
    return op(conn, caller, *args)


def _member(target: Target) -> Target:
    if not target.is_member:
        raise AdminInputError(f"{target.mention} is not a member of this server.")
    return target


def _who(caller: Caller, target: Target) -> quotas.Who:
    return quotas.Who(caller.guild, target.user, target.role_ids)


# -- tiers ------------------------------------------------------------------------------------------------------


def tier_set(
    conn: redis.Redis, caller: Caller, config: TiersConfig, target: Target, tier: str, days: float | None
) -> str:
    """Give a member a tier, for `days` or for good."""
    _member(target)
    effective = quotas.effective_config(conn, caller.guild, config)
    grant = quotas.set_grant(
        conn, quotas.member_id(caller.guild, target.user), effective, tier, days=days, now=time.time()
    )
    until = f"until {quotas.date(grant.expires_at)}" if grant.expires_at else "with no end"
    audit.record(conn, caller.guild, caller.user, "tier set", target.user, f"{grant.tier} {until}")
    return f"{target.mention} now has the **{grant.tier}** tier {until}."


def tier_clear(conn: redis.Redis, caller: Caller, target: Target) -> str:
    """Remove a member's explicit tier (their roles or the default apply again)."""
    _member(target)
    if not quotas.clear_grant(conn, quotas.member_id(caller.guild, target.user)):
        return f"{target.mention} had no tier given by an admin; nothing changed."
    audit.record(conn, caller.guild, caller.user, "tier clear", target.user)
    return f"{target.mention}'s admin-given tier is removed: their roles or the server's default apply."


def tier_roles(conn: redis.Redis, caller: Caller, config: TiersConfig, role_id: str | None, tier: str | None) -> str:
    """Show the role map, or map a role to a tier (`none` removes the role's mapping)."""
    policy = quotas.load_policy(conn, caller.guild)
    if role_id is None or tier is None:
        if role_id is not None or tier is not None:
            raise AdminInputError("Give both a role and a tier (or `none` to unmap the role), or neither to list.")
        lines = [f"<@&{role}> -> **{name}**" for role, name in sorted(policy.roles.items())]
        return "**Roles mapped to tiers**\n" + ("\n".join(lines) or "none")
    unmap = tier.lower() == "none"

    def change(current: GuildPolicy) -> GuildPolicy | None:
        roles = dict(current.roles)
        if unmap:
            if roles.pop(role_id, None) is None:
                return None
        else:
            roles[role_id] = apply_policy(config, current).get(tier).name
        return dataclasses.replace(current, roles=roles)

    new = quotas.update_policy(conn, caller.guild, config, change)
    if new is None:
        return f"<@&{role_id}> was not mapped to a tier; nothing changed."
    detail = "unmapped" if unmap else new.roles[role_id]
    audit.record(conn, caller.guild, caller.user, "tier roles", f"role {role_id}", detail)
    return f"<@&{role_id}> -> **{detail}**."


def tier_default(conn: redis.Redis, caller: Caller, config: TiersConfig, tier: str) -> str:
    """Set the tier of members with no grant and no mapped role (`default` or `reset`: the deployment's default)."""
    reset = tier.strip().lower() in RESET_WORDS
    chosen = None if reset else config.get(tier).name  # an unknown tier is refused before anything is written
    new = quotas.update_policy(conn, caller.guild, config,
                                  lambda current: dataclasses.replace(current, default_tier=chosen))
    assert new is not None
    name = apply_policy(config, new).default_tier
    audit.record(conn, caller.guild, caller.user, "tier default", name, "the deployment's default" if reset else "")
    how = "the deployment's default" if reset else "this server's default"
    return f"Members with no tier given by an admin and no mapped role now get **{name}** ({how})."


def tier_show(conn: redis.Redis, caller: Caller, config: TiersConfig, target: Target | None) -> str:
    """A member's tier and how it was assigned, or the server's tiers, default and role map."""
    if target is not None:
        assigned = quotas.assignment(conn, config, _who(caller, _member(target)), now=time.time())
        how = quotas.source_text(assigned).replace("your role", "their role")
        return f"{target.mention}: **{assigned.tier.name}** ({how})."
    effective = quotas.effective_config(conn, caller.guild, config)
    policy = quotas.load_policy(conn, caller.guild)
    lines = [f"**Default tier:** {effective.default_tier}", "**Tiers**"]
    lines += [_tier_summary(t) for t in effective.tiers.values()]
    lines += ["**Roles**"] + ([f"<@&{r}> -> {t}" for r, t in sorted(policy.roles.items())] or ["none mapped"])
    return "\n".join(lines)


def _tier_summary(tier: Tier) -> str:
    relax = "relax" if tier.relax else "no relax"
    return (
        f"**{tier.name}**: {quotas.minutes(tier.fast_gpu_s)} fast, {relax}, {tier.max_running_fast} fast running, "
        f"{tier.max_waiting} queued, {tier.max_jobs_per_command}/command, {tier.requests_per_minute}/min"
    )


# -- quota and usage -----------------------------------------------------------------------------------------------


def quota_grant(conn: redis.Redis, caller: Caller, config: TiersConfig, target: Target, minutes: float) -> str:
    """Add extra fast minutes to a member's current period."""
    _member(target)
    if not minutes > 0:
        raise AdminInputError(f"A grant must be a positive number of minutes, not {minutes:g}.")
    total = quotas.grant(
        conn, quotas.member_id(caller.guild, target.user), minutes * 60, now=time.time(), policy=config.period
    )
    audit.record(conn, caller.guild, caller.user, "quota grant", target.user, f"+{minutes:g} min")
    return f"Granted {target.mention} {minutes:g} fast minutes this period ({quotas.minutes(total)} granted in all)."


def quota_reset(conn: redis.Redis, caller: Caller, config: TiersConfig, target: Target) -> str:
    """Forget a member's usage and grants this period (jobs in flight keep their holds)."""
    _member(target)
    quotas.reset(conn, quotas.member_id(caller.guild, target.user), now=time.time(), policy=config.period)
    audit.record(conn, caller.guild, caller.user, "quota reset", target.user)
    return f"{target.mention}'s fast time this period is reset: they start from a full balance."


def usage(conn: redis.Redis, caller: Caller, config: TiersConfig, target: Target | None) -> str:
    """One member's usage this period, or the server's top users."""
    now = time.time()
    if target is not None:
        lines = quotas.tier_lines(conn, config, _who(caller, _member(target)), now=now)
        return f"**Usage of {target.mention} this period**\n" + "\n".join(lines)
    top = quotas.top_users(conn, caller.guild, now=now, policy=config.period)
    rows = [f"{i}. <@{m.split(':', 1)[1]}>: {quotas.minutes(s)}" for i, (m, s) in enumerate(top, 1)]
    return "**Top users this period (GPU time, both lanes)**\n" + ("\n".join(rows) or "nobody yet")


# -- bans, cancel ------------------------------------------------------------------------------------------------------


def ban(conn: redis.Redis, caller: Caller, admins: AdminSettings, target: Target, reason: str | None) -> str:
    """Refuse every later job of a member (their queued jobs stay); admins cannot be banned."""
    _member(target)
    if is_admin(target.user, target.role_ids, target.manage_guild, admins):
        raise AdminInputError(f"{target.mention} is an admin (Manage Server or an admin role): remove that first.")
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON_CHARS:
        raise AdminInputError(f"The reason is {len(reason)} characters; at most {MAX_REASON_CHARS}.")
    quotas.ban(conn, caller.guild, target.user, reason)
    audit.record(conn, caller.guild, caller.user, "ban", target.user, reason)
    return f"{target.mention} is banned from creating images here{f' ({reason})' if reason else ''}."


def unban(conn: redis.Redis, caller: Caller, target: Target) -> str:
    """Lift a ban."""
    if not quotas.unban(conn, caller.guild, target.user):
        return f"{target.mention} was not banned; nothing changed."
    audit.record(conn, caller.guild, caller.user, "unban", target.user)
    return f"{target.mention} may create images again."


def cancel(conn: redis.Redis, caller: Caller, job_id: str) -> str:
    """Cancel any member's job; a queued one's reserved fast time is refunded at once (`myjobs.cancel_job`)."""
    text = myjobs.cancel_job(conn, f"admin:{caller.user}", job_id, admin=True)
    audit.record(conn, caller.guild, caller.user, "cancel", job_id.strip().lower(), text)
    return f"{text} Its reserved fast time is refunded."


# -- limits and /subscribe ---------------------------------------------------------------------------------------------


def parse_limit(name: str, value: str) -> Any:
    """A limit's value from an admin's words (a whole number, yes/no, or a comma list of models).

    Raises:
        AdminInputError: not a known limit, or not a value of its kind.
    """
    text = value.strip()
    if name not in LIMIT_FIELDS:
        raise AdminInputError(f"There is no limit {name!r}; limits are: {', '.join(LIMIT_FIELDS)}.")
    if name in ("relax", "stealth"):
        if text.lower() not in ("yes", "no", "true", "false", "on", "off"):
            raise AdminInputError(f"{name} must be yes or no, not {value!r}.")
        return text.lower() in ("yes", "true", "on")
    if name == "models":
        return [] if text.lower() in ("", "all") else [m.strip() for m in text.split(",") if m.strip()]
    try:
        return int(text)
    except ValueError:
        raise AdminInputError(f"{name} must be a whole number, not {value!r}.") from None


def limits(
    conn: redis.Redis, caller: Caller, config: TiersConfig, tier: str, name: str | None, value: str | None
) -> str:
    """Show a tier's limits in this server, or change one (`default` goes back to the deployment's value)."""
    base = config.get(tier)
    policy = quotas.load_policy(conn, caller.guild)
    if name is None or value is None:
        if name is not None or value is not None:
            raise AdminInputError("Give both a limit and a value to change it, or neither to show the tier.")
        shown = quotas.effective_config(conn, caller.guild, config).get(base.name)
        overridden = policy.limits.get(base.name, {})
        rows = [f"{f}: {getattr(shown, f)}{' (this server)' if f in overridden else ''}" for f in LIMIT_FIELDS]
        return f"**{base.name}** limits\n" + "\n".join(rows)
    reset = value.strip().lower() in RESET_WORDS
    if reset and name not in LIMIT_FIELDS:
        raise AdminInputError(f"There is no limit {name!r}; limits are: {', '.join(LIMIT_FIELDS)}.")
    parsed = None if reset else parse_limit(name, value)

    def change(current: GuildPolicy) -> GuildPolicy:
        changes = dict(current.limits.get(base.name, {}))
        if reset:
            changes.pop(name, None)
        else:
            changes[name] = parsed
        merged = {**current.limits, base.name: changes}
        if not changes:
            merged.pop(base.name)
        return dataclasses.replace(current, limits=merged)

    try:
        new = quotas.update_policy(conn, caller.guild, config, change)
    except TierConfigError as exc:
        raise TierConfigError(f"Not changed: {exc}.") from None
    assert new is not None
    shown_value = getattr(apply_policy(config, new).get(base.name), name)
    audit.record(conn, caller.guild, caller.user, "limits", base.name, f"{name} = {shown_value}")
    return f"**{base.name}** {name} is now {shown_value} in this server."


def announce_text(conn: redis.Redis, caller: Caller, config: TiersConfig, text: str | None) -> str:
    """Show or set what `/subscribe` tells members (`none` clears it)."""
    policy = quotas.load_policy(conn, caller.guild)
    if text is None:
        return f"/subscribe says:\n{policy.subscribe_text or '(nothing set: a default line)'}"
    text = "" if text.strip().lower() == "none" else text.strip()
    if len(text) > MAX_SUBSCRIBE_CHARS:
        raise AdminInputError(f"The text is {len(text)} characters; at most {MAX_SUBSCRIBE_CHARS}.")
    quotas.update_policy(conn, caller.guild, config,
                            lambda current: dataclasses.replace(current, subscribe_text=text))
    audit.record(conn, caller.guild, caller.user, "announce-text", "", text[:100])
    return "The /subscribe text is updated." if text else "The /subscribe text is cleared."


def audit_text(conn: redis.Redis, caller: Caller, count: int) -> str:
    """The latest audit entries, newest first."""
    if not 1 <= count <= 50:
        raise AdminInputError("Show between 1 and 50 entries.")
    rows = [
        f"{quotas.date(e.at)} <@{e.actor}> **{e.action}** {e.target} {e.detail}".rstrip()
        for e in audit.latest(conn, caller.guild, count)
    ]
    return "**Latest admin actions**\n" + ("\n".join(rows) or "none yet")
