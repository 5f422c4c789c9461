"""A guild's block and allow lists: the shipped default, plus the guild's additions, minus the default entries it
removed; and their compiled filters, cached per process until the lists' `rev` changes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis

import moderation.listfile as listfile
from core import keys
from core.errors import AdminInputError
from moderation.policy import text_of
from moderation.promptfilter import Filter


def block_add(conn: redis.Redis, guild: str, entry: str) -> str:
    """Block a word or phrase; returns it as stored. Raises AdminInputError: a bad entry or a full list."""
    text = listfile.check_entry(entry)
    if len(block_list(conn, guild)) >= listfile.MAX_ENTRIES:
        raise AdminInputError(f"the block list holds {listfile.MAX_ENTRIES} entries already: remove some first")
    _change(conn, guild, lambda pipe: (pipe.sadd(keys.moderation_block(guild), text),
                                       pipe.srem(keys.moderation_unblock(guild), text)))
    return text


def block_remove(conn: redis.Redis, guild: str, entry: str) -> bool:
    """Stop blocking an entry (a default one too); False when it was not blocked."""
    text = " ".join(str(entry).split())
    if text not in block_list(conn, guild):
        return False
    in_default = text in _default_blocked()
    _change(conn, guild, lambda pipe: (pipe.srem(keys.moderation_block(guild), text),
                                       pipe.sadd(keys.moderation_unblock(guild), text) if in_default else None))
    return True


def allow_add(conn: redis.Redis, guild: str, entry: str) -> str:
    """Add to the allow list; returns the entry as stored. Raises AdminInputError: a bad entry or a full list."""
    text = listfile.check_entry(entry)
    if len(allow_list(conn, guild)) >= listfile.MAX_ENTRIES:
        raise AdminInputError(f"the allow list holds {listfile.MAX_ENTRIES} entries already: remove some first")
    _change(conn, guild, lambda pipe: pipe.sadd(keys.moderation_allow(guild), text))
    return text


def allow_remove(conn: redis.Redis, guild: str, entry: str) -> bool:
    """Remove a guild allow-list entry; False when it had none such (default allow entries stay)."""
    text = " ".join(str(entry).split())
    return bool(_change(conn, guild, lambda pipe: pipe.srem(keys.moderation_allow(guild), text))[0])


def block_list(conn: redis.Redis, guild: str) -> list[str]:
    """Every entry blocked in the guild, sorted (mature entries included)."""
    removed = _members(conn, keys.moderation_unblock(guild))
    return sorted((set(_default_blocked()) - removed) | _members(conn, keys.moderation_block(guild)))


def allow_list(conn: redis.Redis, guild: str) -> list[str]:
    """Every allow-list entry of the guild, sorted."""
    return sorted(set(listfile.default_lists().allow) | _members(conn, keys.moderation_allow(guild)))


_filters: dict[tuple[str, bool], tuple[str, Filter]] = {}  # compiled filters by (guild, mature allowed), with rev
_MAX_CACHED = 256


def load_filter(conn: redis.Redis, guild: str, *, mature_allowed: bool, languages: Sequence[str] = ()) -> Filter:
    """The guild's compiled filter for a channel (cached until the guild's lists or languages change)."""
    rev = text_of(conn.hget(keys.moderation_policy(guild), "rev") or "")
    cached = cached_filter(guild, rev, mature_allowed=mature_allowed)
    if cached is not None:
        return cached
    with conn.pipeline(transaction=False) as pipe:
        for command in filter_reads(guild):
            pipe.execute_command(*command)
        replies = pipe.execute()
    return compile_filter(guild, rev, replies, mature_allowed=mature_allowed, languages=languages)


def cached_filter(guild: str, rev: str, *, mature_allowed: bool) -> Filter | None:
    """The guild's compiled filter if it is cached for lists at revision `rev` (the policy hash's `rev` field)."""
    cached = _filters.get((guild, mature_allowed))
    return cached[1] if cached is not None and cached[0] == rev else None


def filter_reads(guild: str) -> list[tuple[str, ...]]:
    """The commands whose replies `compile_filter` needs: the guild's unblocked, blocked and allowed entries."""
    return [
        ("SMEMBERS", keys.moderation_unblock(guild)),
        ("SMEMBERS", keys.moderation_block(guild)),
        ("SMEMBERS", keys.moderation_allow(guild)),
    ]


def compile_filter(
    guild: str, rev: str, replies: Sequence[set[bytes]], *, mature_allowed: bool, languages: Sequence[str] = ()
) -> Filter:
    """The guild's filter from the replies to `filter_reads`, cached under `rev`; `languages` are the policy's
    (`Policy.language_list`): the listed words that are ordinary words in them are read alone as those words."""
    removed, added, allowed = ({text_of(member) for member in reply} for reply in replies)
    default = listfile.default_lists()
    blocked = [e for e in default.blocked(mature_allowed=mature_allowed) if e not in removed] + sorted(added)
    compiled = Filter.from_lists(blocked, sorted(set(default.allow) | allowed), default.ordinary_in(languages))
    if len(_filters) >= _MAX_CACHED:
        _filters.pop(next(iter(_filters)))
    _filters[(guild, mature_allowed)] = (rev, compiled)
    return compiled


def _default_blocked() -> tuple[str, ...]:
    return listfile.default_lists().blocked(mature_allowed=False)


def _change(conn: redis.Redis, guild: str, commands: object) -> list[object]:
    """Run list changes and give the guild's lists a new `rev` in one transaction; returns the changes' results.
    A random rev, not a counter: a Redis restored or flushed never brings back a rev a process has cached."""
    with conn.pipeline() as pipe:
        commands(pipe)  # type: ignore[operator]
        pipe.hset(keys.moderation_policy(guild), "rev", uuid.uuid4().hex)
        return [result for result in pipe.execute()[:-1]]


def _members(conn: redis.Redis, key: str) -> set[str]:
    return {text_of(member) for member in conn.smembers(key)}
