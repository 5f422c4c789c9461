"""A user's saved defaults (`/settings`) and mode (`/fast`, `/relax`), kept in Redis and applied to later prompts.

Defaults are stored as prompt parameters (`ar` -> "16:9") so the prompt language checks them like typed ones, and a
parameter written in the prompt wins over a saved one (`core.prompt.parse(..., defaults=...)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from core import keys, preferences, prompt
from core.errors import PromptError
from core.images import Rules
from core.models import ModelRegistry
from core.preferences import Preferences
from core.settings import JobSettings
from core.spec import JobSpec, Mode

DEFAULT_NAMES = ("ar", "stylize", "model")
"""The parameters `/settings` can save a default for."""

MODES: tuple[Mode, ...] = ("fast", "relax")

OPTION_FIELD = "option:"
"""Hash fields `option:<name>` hold the custom options (`/prefer option set`)."""


@dataclass(frozen=True)
class UserSettings:
    """What one user saved: the mode their jobs run in, and default prompt parameters by name."""

    mode: Mode = "fast"
    defaults: dict[str, str] = field(default_factory=dict)
    remix: bool = False  # Remix mode: V, Vary, Zoom, Pan and re-roll first open the prompt for editing
    stealth: bool = False  # /stealth: new jobs are private on the web gallery (where the tier allows it)
    preferences: Preferences = field(default_factory=Preferences)  # `/prefer suffix` and `/prefer option`


def parse_prompt(text: str, saved: UserSettings, registry: ModelRegistry, *, caps: JobSettings, image_rules: Rules
                 ) -> list[JobSpec]:
    """The jobs of a prompt a member wrote, under the deployment's caps and the member's saved defaults, mode and
    preferences (as `/imagine`, Remix and Custom Zoom parse it, in Discord and on the web).

    Raises:
        PromptError: it does not parse.
    """
    return prompt.parse(text, registry, max_jobs=caps.max_jobs_per_command, max_chars=caps.max_prompt_chars,
                        defaults=saved.defaults, default_mode=saved.mode, preferences=saved.preferences,
                        image_rules=image_rules)


def one_job(specs: list[JobSpec]) -> JobSpec:
    """The one job an edited prompt (Remix, Custom Zoom) must ask for.

    Raises:
        PromptError: it asks for several.
    """
    if len(specs) != 1:
        raise PromptError("Remix takes one prompt: {a, b} permutations and --repeat work in /imagine.")
    return specs[0]


def get(conn: redis.Redis, owner: str) -> UserSettings:
    """The user's settings (built-in ones when they saved nothing)."""
    return from_hash(conn.hgetall(keys.user_settings(owner)))


def from_hash(data: Mapping[bytes | str, bytes | str]) -> UserSettings:
    """The settings stored as `data` (`HGETALL keys.user_settings`), for a caller that read the hash itself."""
    text = {_str(k): _str(v) for k, v in data.items()}
    mode = text.pop("mode", "fast")
    defaults = {name: value for name, value in text.items() if name in DEFAULT_NAMES and value}
    options = {name.removeprefix(OPTION_FIELD): value for name, value in text.items() if name.startswith(OPTION_FIELD)}
    return UserSettings(mode="relax" if mode == "relax" else "fast", defaults=defaults,
                        remix=text.get("remix") == "1", stealth=text.get("stealth") == "1",
                        preferences=Preferences(text.get("suffix", ""), options))


def set_remix(conn: redis.Redis, owner: str, on: bool) -> None:
    """Turn Remix mode on or off."""
    conn.hset(keys.user_settings(owner), "remix", "1" if on else "0")


def set_stealth(conn: redis.Redis, owner: str, on: bool) -> None:
    """Turn stealth mode on (/stealth) or off (/public)."""
    conn.hset(keys.user_settings(owner), "stealth", "1" if on else "0")


def set_suffix(conn: redis.Redis, owner: str, suffix: str) -> str:
    """Save the text appended to every prompt ("" forgets it); returns it as saved.

    Raises:
        PromptError: it is longer than `core.preferences.MAX_SUFFIX_CHARS`.
    """
    suffix = preferences.check_text("the suffix", suffix, preferences.MAX_SUFFIX_CHARS)
    if suffix:
        conn.hset(keys.user_settings(owner), "suffix", suffix)
    else:
        conn.hdel(keys.user_settings(owner), "suffix")
    return suffix


def set_option(conn: redis.Redis, owner: str, name: str, value: str) -> None:
    """Save custom option `--name` standing for `value`, both as `core.prompt.check_option` returned them.

    Raises:
        PromptError: MAX_OPTIONS are already kept.
    """
    saved = get(conn, owner).preferences.options
    if name not in saved and len(saved) >= preferences.MAX_OPTIONS:
        raise PromptError(f"you already keep {preferences.MAX_OPTIONS} options; delete one first")
    conn.hset(keys.user_settings(owner), OPTION_FIELD + name, value)


def delete_option(conn: redis.Redis, owner: str, name: str) -> bool:
    """Forget custom option `--name`; whether there was one."""
    return bool(conn.hdel(keys.user_settings(owner), OPTION_FIELD + name.strip().lower().removeprefix("--")))


def toggle_remix(conn: redis.Redis, owner: str) -> bool:
    """Turn Remix mode over (Midjourney's `/prefer remix`); returns whether it is on now."""
    on = not get(conn, owner).remix
    set_remix(conn, owner, on)
    return on


def set_mode(conn: redis.Redis, owner: str, mode: str) -> None:
    """Save the mode later jobs run in.

    Raises:
        ValueError: `mode` is not fast or relax.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    conn.hset(keys.user_settings(owner), "mode", mode)


def set_default(conn: redis.Redis, owner: str, name: str, value: str | None) -> None:
    """Save a default parameter value; None or "" forgets it (the built-in default applies again).

    Raises:
        ValueError: `name` is not one of DEFAULT_NAMES.
    """
    if name not in DEFAULT_NAMES:
        raise ValueError(f"no saved default for {name!r}; choose from {DEFAULT_NAMES}")
    if value:
        conn.hset(keys.user_settings(owner), name, value)
    else:
        conn.hdel(keys.user_settings(owner), name)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
