"""A guild's moderation policy: NSFW handling, what happens to flagged images, strike limits, the languages whose
ordinary words the filter reads as such; stored in its policy hash (`keys.moderation_policy`, which also holds the
lists' `rev` and the moderation log channel)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import redis

import moderation.listfile as listfile
from core import keys
from core.errors import AdminInputError
from core.safety import FLAGGED_ACTIONS

NSFW_POLICIES = ("age-restricted", "strict")
"""age-restricted: mature entries allowed, no safety prompt and no output check in channels Discord marks
age-restricted; strict: every channel is treated as not age-restricted."""

DEFAULT_SAFETY_NEGATIVE = "nsfw, nudity, nude, naked, sexual, gore, blood, violence"
"""The negative prompt the worker adds to jobs outside age-restricted channels (admins may change it)."""

MAX_SAFETY_NEGATIVE_CHARS = 300
MAX_STRIKE_LIMIT = 100
MAX_STRIKE_WINDOW_S = 7 * 24 * 3600
MAX_SUSPENSION_S = 365 * 24 * 3600


@dataclass(frozen=True)
class Policy:
    """A guild's moderation settings (defaults when its admins set nothing)."""

    nsfw: str = "age-restricted"  # one of NSFW_POLICIES
    flagged_action: str = "blur"  # one of FLAGGED_ACTIONS
    safety_negative: str = DEFAULT_SAFETY_NEGATIVE
    strike_limit: int = 3  # blocked prompts within strike_window_s that suspend the member
    strike_window_s: int = 10 * 60
    suspension_s: int = 60 * 60  # how long that suspension lasts
    log_channel: str = ""  # channel id of the moderation log; "" = none
    log_failure: str = ""  # why the last post to the log channel failed ("" = it worked or was never tried)
    languages: str = ""  # comma-separated codes (`language_codes`) whose ordinary words the filter reads as such

    def language_list(self) -> tuple[str, ...]:
        """The codes in `languages`."""
        return tuple(code for code in (part.strip() for part in self.languages.split(",")) if code)


def load_policy(conn: redis.Redis, guild: str) -> Policy:
    """The guild's moderation settings."""
    return policy_from(conn.hgetall(keys.moderation_policy(guild)))


def policy_from(raw: Mapping[bytes | str, bytes | str]) -> Policy:
    """A guild's settings from its stored hash (`HGETALL keys.moderation_policy`)."""
    data = {text_of(k): text_of(v) for k, v in raw.items()}
    values: dict[str, object] = {}
    for field in fields(Policy):
        if field.name in data:
            values[field.name] = int(data[field.name]) if field.type == "int" else data[field.name]
    return Policy(**values)  # type: ignore[arg-type]


def set_policy(conn: redis.Redis, guild: str, **changes: object) -> Policy:
    """Change some settings (`/admin moderation set`); returns the new policy.

    Raises:
        AdminInputError: an unknown setting or a value out of range; nothing changed.
    """
    policy = load_policy(conn, guild)
    known = {field.name for field in fields(Policy)} - {"log_channel", "log_failure"}
    for name in changes:
        if name not in known:
            raise AdminInputError(f"no moderation setting {name!r}; choose from {', '.join(sorted(known))}")
    if "languages" in changes:
        changes["languages"] = ",".join(sorted({code.strip().lower() for code in str(changes["languages"]).split(",")
                                                if code.strip()}))
    new = replace(policy, **changes)  # type: ignore[arg-type]
    _check_policy(new)
    with conn.pipeline() as pipe:
        pipe.hset(keys.moderation_policy(guild), mapping={name: str(getattr(new, name)) for name in changes})
        if "languages" in changes:  # the guild's filters change with it: a new rev, as for a change of its lists
            pipe.hset(keys.moderation_policy(guild), "rev", uuid.uuid4().hex)
        pipe.execute()
    return new


def language_codes() -> tuple[str, ...]:
    """The language codes a policy may name: those of the default list's `[languages]` section."""
    return tuple(sorted({code for code, _ in listfile.default_lists().languages}))


def _check_policy(policy: Policy) -> None:
    if policy.nsfw not in NSFW_POLICIES:
        raise AdminInputError(f"the NSFW policy must be one of {', '.join(NSFW_POLICIES)}, not {policy.nsfw!r}")
    if policy.flagged_action not in FLAGGED_ACTIONS:
        raise AdminInputError(f"flagged images may be {' or '.join(FLAGGED_ACTIONS)}, not "
                              f"{policy.flagged_action!r}")
    if len(policy.safety_negative) > MAX_SAFETY_NEGATIVE_CHARS:
        raise AdminInputError(f"the safety negative prompt may be at most {MAX_SAFETY_NEGATIVE_CHARS} characters")
    unknown = set(policy.language_list()) - set(language_codes())
    if unknown:
        raise AdminInputError(f"no listed word is an ordinary word in {', '.join(sorted(unknown))}; languages may be "
                              f"{', '.join(language_codes())} (comma-separated), or none")
    for name, value, high in (("strike_limit", policy.strike_limit, MAX_STRIKE_LIMIT),
                              ("strike_window_s", policy.strike_window_s, MAX_STRIKE_WINDOW_S),
                              ("suspension_s", policy.suspension_s, MAX_SUSPENSION_S)):
        if not isinstance(value, int) or not 1 <= value <= high:
            raise AdminInputError(f"{name} must be a whole number from 1 to {high}, not {value!r}")


def mature_allowed(policy: Policy, channel_nsfw: bool) -> bool:
    """Whether mature entries are allowed in a channel Discord marks (or not) age-restricted under `policy`."""
    return channel_nsfw and policy.nsfw == "age-restricted"


def text_of(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value
