"""A guild's tier policy and admins' grants, kept in Redis (the pure rules they follow are in `quotas.tiers`)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import redis

from core import keys
from core.errors import AdminInputError
from quotas.tiers import Assignment, Grant, GuildPolicy, TiersConfig, apply_policy, resolve

MAX_GRANT_DAYS = 3660
"""A tier grant longer than ten years is a typo; give none (`days=None`) for a grant without end."""

DAY_S = 24 * 3600


POLICY_UPDATE_TRIES = 20
"""Attempts `update_policy` makes when other edits of the same guild's policy keep landing between its read and its
write (each attempt is a few milliseconds; in practice a second one always succeeds)."""

POLICY_RETRY_CAP_S = 0.05
"""Longest pause before another attempt: each lost race waits a random time up to 1 ms, 2 ms, 4 ms... (capped), so
editors that keep colliding spread out instead of retrying in lockstep (eight threads on a loaded 2-core machine
once lost all 20 attempts back to back)."""


def load_policy(conn: redis.Redis, guild: str) -> GuildPolicy:
    """The guild's policy (the deployment's defaults when its admins set nothing)."""
    return parse_policy(conn.get(keys.tier_policy(guild)))


def save_policy(conn: redis.Redis, guild: str, config: TiersConfig, policy: GuildPolicy) -> TiersConfig:
    """Check the policy against the deployment's tiers, then store it whole (an edit of one part of a stored policy
    goes through `update_policy`, so a concurrent edit of another part is not lost).

    Returns:
        The guild's effective tiers under the new policy.

    Raises:
        TierConfigError: an unknown tier or field, or an override that makes a tier contradictory (nothing stored).
    """
    effective = apply_policy(config, policy)
    conn.set(keys.tier_policy(guild), _dump(policy))
    return effective


def update_policy(
    conn: redis.Redis, guild: str, config: TiersConfig, change: Callable[[GuildPolicy], GuildPolicy | None]
) -> GuildPolicy | None:
    """Read, change and store the guild's policy atomically: `change(current)` returns the new policy (None: leave it
    as it is), which is checked like `save_policy` and stored only if nobody stored another policy meanwhile (Redis
    WATCH/MULTI); otherwise `change` runs again on the newer policy. Two admins editing at once both keep their edit.

    Args:
        change: a pure function of the current policy; it may run more than once, and may raise to refuse.

    Returns:
        The policy stored, or None when `change` returned None.

    Raises:
        TierConfigError: the new policy names an unknown tier or field, or contradicts a tier (nothing stored).
        AdminInputError: raised by `change`; or the policy changed under every one of POLICY_UPDATE_TRIES attempts.
    """
    key = keys.tier_policy(guild)
    with conn.pipeline() as pipe:
        for attempt in range(POLICY_UPDATE_TRIES):
            if attempt:
                time.sleep(random.uniform(0, min(POLICY_RETRY_CAP_S, 0.001 * 2**attempt)))
            try:
                pipe.watch(key)
                new = change(parse_policy(pipe.get(key)))
                if new is None:
                    return None
                apply_policy(config, new)
                pipe.multi()
                pipe.set(key, _dump(new))
                pipe.execute()
                return new
            except redis.WatchError:
                continue
            finally:
                pipe.reset()  # unwatch, also when `change` or the check raised
    raise AdminInputError("Other admins are changing this server's tier settings right now; nothing changed, try "
                          "again.")


def parse_policy(raw: bytes | str | None) -> GuildPolicy:
    """A guild's policy from its stored JSON (`GET keys.tier_policy`); None or empty: the defaults."""
    if not raw:
        return GuildPolicy()
    data = json.loads(raw)
    return GuildPolicy(
        default_tier=data.get("default_tier"),
        roles={str(k): str(v) for k, v in data.get("roles", {}).items()},
        limits={str(k): dict(v) for k, v in data.get("limits", {}).items()},
        subscribe_text=str(data.get("subscribe_text", "")),
    )


def _dump(policy: GuildPolicy) -> str:
    data = {
        "default_tier": policy.default_tier,
        "roles": policy.roles,
        "limits": policy.limits,
        "subscribe_text": policy.subscribe_text,
    }
    return json.dumps(data, sort_keys=True)


def effective_config(conn: redis.Redis, guild: str, config: TiersConfig) -> TiersConfig:
    """The deployment's tiers with the guild's stored overrides applied."""
    return apply_policy(config, load_policy(conn, guild))


def set_grant(
    conn: redis.Redis, member: str, config: TiersConfig, tier: str, *, days: float | None, now: float
) -> Grant:
    """Give a member a tier explicitly (`/admin tier set`), for `days` or for good.

    Raises:
        TierConfigError: there is no such tier.
        AdminInputError: `days` is not positive or absurdly long.
    """
    name = config.get(tier).name
    if days is not None and not 0 < days <= MAX_GRANT_DAYS:
        raise AdminInputError(f"days must be more than 0 and at most {MAX_GRANT_DAYS}")
    grant = Grant(tier=name, expires_at=None if days is None else now + days * DAY_S)
    key = keys.tier_grant(member)
    with conn.pipeline() as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping={"tier": name, "expires_at": "" if grant.expires_at is None else repr(grant.expires_at)})
        pipe.execute()
    return grant


def clear_grant(conn: redis.Redis, member: str) -> bool:
    """Remove a member's explicit tier (`/admin tier clear`). Returns False when there was none."""
    return bool(conn.delete(keys.tier_grant(member)))


def get_grant(conn: redis.Redis, member: str) -> Grant | None:
    """The member's explicit tier, or None."""
    return parse_grant(conn.hgetall(keys.tier_grant(member)))  # type: ignore[arg-type]


GRANTS_SCAN_MAX = 10_000
"""Most grant keys `grants` looks at (the admins' dashboard lists grants; a guild rarely has more than a few)."""


def grants(conn: redis.Redis, guild: str) -> list[tuple[str, Grant]]:
    """The guild's explicit tiers: (user id, grant), by user id. Found by SCAN (there is no index of them)."""
    prefix, suffix = keys.tier_grant(f"{guild}:\0").split("\0")
    found: list[tuple[str, Grant]] = []
    names = [_str(k) for _, k in zip(range(GRANTS_SCAN_MAX), conn.scan_iter(match=keys.tier_grant(f"{guild}:*"),
                                                                              count=500), strict=False)]
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        for name, raw in zip(names, pipe.execute(), strict=True):
            grant = parse_grant(raw)
            if grant is not None:
                found.append((name[len(prefix):-len(suffix)], grant))
    return sorted(found)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_grant(raw: dict[bytes, bytes]) -> Grant | None:
    """A member's grant from its stored hash (`HGETALL keys.tier_grant`); None when there is none."""
    data = {k.decode(): v.decode() for k, v in raw.items()}
    if not data.get("tier"):
        return None
    return Grant(tier=data["tier"], expires_at=float(data["expires_at"]) if data.get("expires_at") else None)


def assignment(
    conn: redis.Redis, config: TiersConfig, guild: str, user: str, role_ids: list[int | str], *, now: float
) -> Assignment:
    """A member's tier and how it was assigned, from the guild's stored policy, their grant and their roles."""
    policy = load_policy(conn, guild)
    return resolve(
        apply_policy(config, policy), policy, role_ids=role_ids, grant=get_grant(conn, f"{guild}:{user}"), now=now
    )
