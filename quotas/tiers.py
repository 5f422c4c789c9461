"""Subscription tiers: their limits, where they come from, which one a member has, and the accounting period.

Pure: plain values in, frozen dataclasses out, `TierConfigError` with a message that names the tier and the field.
Redis-backed pieces (a guild's overrides, admins' grants) live in `quotas.tierstore`; balances in `quotas.ledger`.

A deployment's tiers come from a TOML file (`quotas/tiers.toml` is the documented default), listed
from lowest to highest: when a member's roles map to several tiers, the one listed last wins.
"""

from __future__ import annotations

import calendar
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import TierConfigError

DEFAULT_TIERS_FILE = Path(__file__).resolve().parent / "tiers.toml"
"""The documented default tiers (free, basic, standard, pro)."""

MAX_PERIOD_DAY = 28
"""Monthly periods start on day 1..28, so that every month has that day."""

MAX_FAST_GPU_S = 31 * 24 * 3600
"""More fast GPU-seconds per period than one GPU has in a month is a typo, not a plan."""


@dataclass(frozen=True)
class Tier:
    """What a member of this tier may do. Every count is per member."""

    name: str
    fast_gpu_s: int  # fast GPU-seconds per period (measured by the worker); 0 = relax only
    relax: bool  # whether jobs may run in the relax lane (unmetered, after fast jobs)
    max_running_fast: int  # fast jobs queued or running at once (fast jobs start at once, so: running)
    max_running_relax: int  # relax jobs running at once; more of them wait their fair turn
    max_waiting: int  # jobs queued or running at once, both lanes together
    max_jobs_per_command: int  # jobs one command may create (permutations x --repeat)
    requests_per_minute: int  # commands and buttons that ask for jobs, in any 60 s
    models: tuple[str, ...] = ()  # registry names this tier may use; empty = all
    max_pixels: int = 1024 * 1024  # width * height of one image
    max_steps: int = 100  # sampling steps of one job (after --quality)
    stealth: bool = False  # members may make stealth images (/stealth): private to them on the web gallery

    def allows_model(self, model: str) -> bool:
        return not self.models or model.lower() in (m.lower() for m in self.models)


@dataclass(frozen=True)
class PeriodPolicy:
    """When balances reset: monthly on `day` (UTC midnight), or every `days` days counted from `anchor`."""

    kind: Literal["monthly", "days"] = "monthly"
    day: int = 1  # monthly: day of the month the period starts (1..28)
    days: int = 30  # days: the period's length
    anchor: datetime = datetime(2024, 1, 1, tzinfo=UTC)  # days: a moment a period started


@dataclass(frozen=True)
class TiersConfig:
    """A deployment's tiers (lowest first), its default tier and its period."""

    tiers: dict[str, Tier]
    default_tier: str
    period: PeriodPolicy = field(default_factory=PeriodPolicy)

    def rank(self, name: str) -> int:
        """Position from the lowest tier (0); higher is better."""
        return list(self.tiers).index(name)

    def get(self, name: str) -> Tier:
        """The tier called `name` (case-insensitive).

        Raises:
            TierConfigError: there is no such tier; the message lists the known ones.
        """
        for tier_name, tier in self.tiers.items():
            if tier_name.lower() == name.lower():
                return tier
        raise TierConfigError(f"unknown tier {name!r}; tiers are: {', '.join(self.tiers)}")


@dataclass(frozen=True)
class Grant:
    """An admin's explicit tier for one member, until `expires_at` (Unix time; None = for good)."""

    tier: str
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class GuildPolicy:
    """One guild's choices on top of the deployment's tiers (set by its admins, stored by `quotas.tierstore`)."""

    default_tier: str | None = None  # None: the deployment's default
    roles: dict[str, str] = field(default_factory=dict)  # Discord role id -> tier name
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)  # tier name -> {field: value} overrides
    subscribe_text: str = ""  # what `/subscribe` tells members


@dataclass(frozen=True)
class Assignment:
    """A member's tier and how it was assigned (shown by `/info`)."""

    tier: Tier
    source: Literal["grant", "role", "default"]
    role_id: str | None = None  # the role that gave it, for source "role"
    expires_at: float | None = None  # when the grant ends, for source "grant"


def validate_tier(tier: Tier) -> Tier:
    """Return `tier` when its limits make sense together.

    Raises:
        TierConfigError: a negative or zero limit where one is needed, or limits that contradict each other.
    """
    where = f"tier {tier.name!r}"
    if not tier.name or not tier.name.replace("-", "").replace("_", "").isalnum():
        raise TierConfigError(f"tier name {tier.name!r} must be letters, digits, '-' or '_'")
    for name in ("fast_gpu_s", "max_running_fast", "max_running_relax", "max_waiting"):
        if getattr(tier, name) < 0:
            raise TierConfigError(f"{where}: {name} cannot be negative (it is {getattr(tier, name)})")
    for name in ("max_jobs_per_command", "requests_per_minute", "max_pixels", "max_steps"):
        if getattr(tier, name) < 1:
            raise TierConfigError(f"{where}: {name} must be at least 1 (it is {getattr(tier, name)})")
    if tier.fast_gpu_s > MAX_FAST_GPU_S:
        raise TierConfigError(f"{where}: fast_gpu_s {tier.fast_gpu_s} is more than a GPU has in a month")
    if tier.fast_gpu_s == 0 and not tier.relax:
        raise TierConfigError(f"{where}: no fast time and no relax mode, so it can run nothing (ban instead)")
    if tier.fast_gpu_s > 0 and tier.max_running_fast == 0:
        raise TierConfigError(f"{where}: has fast time but max_running_fast is 0")
    if tier.relax and tier.max_running_relax == 0:
        raise TierConfigError(f"{where}: allows relax but max_running_relax is 0")
    for name in ("max_running_fast", "max_running_relax", "max_jobs_per_command"):
        if getattr(tier, name) > tier.max_waiting:
            raise TierConfigError(
                f"{where}: {name} ({getattr(tier, name)}) is more than max_waiting ({tier.max_waiting}), "
                "which counts queued and running jobs together, so it could never be reached"
            )
    return tier


def tier_from_dict(name: str, data: Mapping[str, Any]) -> Tier:
    """Build and validate one tier from a TOML table (or an override merged onto one).

    Raises:
        TierConfigError: an unknown or missing field, a wrong type, or limits that fail `validate_tier`.
    """
    known = {f.name for f in fields(Tier)} - {"name"}
    unknown = set(data) - known
    if unknown:
        raise TierConfigError(f"tier {name!r}: unknown field(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for f in fields(Tier):
        if f.name == "name" or f.name not in data:
            continue
        value = data[f.name]
        if f.name in ("relax", "stealth"):
            if not isinstance(value, bool):
                raise TierConfigError(f"tier {name!r}: {f.name} must be true or false, not {value!r}")
        elif f.name == "models":
            if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
                raise TierConfigError(f"tier {name!r}: models must be a list of model names")
            value = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise TierConfigError(f"tier {name!r}: {f.name} must be a whole number, not {value!r}")
        values[f.name] = value
    try:
        tier = Tier(name=name, **values)
    except TypeError:
        missing = [f.name for f in fields(Tier) if f.name not in values and f.name != "name"]
        raise TierConfigError(f"tier {name!r}: missing field(s) {', '.join(missing)}") from None
    return validate_tier(tier)


def parse_period(data: Mapping[str, Any]) -> PeriodPolicy:
    """The `[period]` table: `kind = "monthly"` with `day`, or `kind = "days"` with `days` (and `anchor`).

    Raises:
        TierConfigError: an unknown kind, a day outside 1..28, or a length under one day.
    """
    kind = data.get("kind", "monthly")
    if kind == "monthly":
        day = data.get("day", 1)
        if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= MAX_PERIOD_DAY:
            raise TierConfigError(f"period day must be 1..{MAX_PERIOD_DAY} (so every month has it), not {day!r}")
        return PeriodPolicy(kind="monthly", day=day)
    if kind == "days":
        days = data.get("days", 30)
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise TierConfigError(f"period days must be a whole number of at least 1, not {days!r}")
        anchor = data.get("anchor", PeriodPolicy.anchor)
        if not isinstance(anchor, datetime):
            anchor = datetime.combine(anchor, datetime.min.time()) if hasattr(anchor, "year") else None
        if anchor is None:
            raise TierConfigError("period anchor must be a TOML date or date-time")
        return PeriodPolicy(kind="days", days=days, anchor=anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC))
    raise TierConfigError(f"period kind must be 'monthly' or 'days', not {kind!r}")


def config_from_dict(data: Mapping[str, Any]) -> TiersConfig:
    """Build and validate a whole tiers config from parsed TOML.

    Raises:
        TierConfigError: no tiers, an invalid tier, an unknown default tier, or an invalid period.
    """
    tables = data.get("tiers")
    if not isinstance(tables, dict) or not tables:
        raise TierConfigError("the tiers file defines no [tiers.NAME] tables")
    tiers = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise TierConfigError(f"tiers.{name} must be a table")
        tiers[name] = tier_from_dict(name, table)
    default = data.get("default_tier", next(iter(tiers)))
    config = TiersConfig(tiers=tiers, default_tier=default, period=parse_period(data.get("period", {})))
    config.get(default)  # raises for an unknown default
    return config


def load_config(path: Path = DEFAULT_TIERS_FILE) -> TiersConfig:
    """Read and validate a tiers TOML file.

    Raises:
        TierConfigError: the file is missing, not TOML, or invalid (see `config_from_dict`).
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TierConfigError(f"cannot read tiers file {str(path)!r}: {exc}") from None
    return config_from_dict(data)


def apply_policy(config: TiersConfig, policy: GuildPolicy) -> TiersConfig:
    """The deployment's tiers with one guild's default, role map and limit overrides applied and checked.

    Raises:
        TierConfigError: the policy names an unknown tier or field, or an override makes a tier contradictory.
    """
    tiers = dict(config.tiers)
    for name, changes in policy.limits.items():
        base = config.get(name)
        merged = {f.name: getattr(base, f.name) for f in fields(Tier) if f.name != "name"}
        tiers[base.name] = tier_from_dict(base.name, {**merged, **changes})
    for role, name in policy.roles.items():
        if not str(role).isdigit():
            raise TierConfigError(f"role id {role!r} is not a Discord id")
        config.get(name)
    default = config.get(policy.default_tier).name if policy.default_tier else config.default_tier
    return replace(config, tiers=tiers, default_tier=default)


def resolve(
    config: TiersConfig,
    policy: GuildPolicy,
    *,
    role_ids: Iterable[int | str],
    grant: Grant | None,
    now: float,
) -> Assignment:
    """A member's tier: an admin's unexpired grant, else the best tier of their roles, else the guild's default.

    Args:
        config: the guild's effective tiers (`apply_policy` already applied).
        policy: the guild's role map and default.
        role_ids: the member's Discord role ids (they arrive with every interaction).
        grant: the admin's grant for this member, if any.
        now: Unix time.

    Returns:
        The tier and how it was assigned. A grant or role naming a tier that no longer exists is skipped.
    """
    if grant is not None and grant.active(now) and grant.tier in config.tiers:
        return Assignment(config.tiers[grant.tier], "grant", expires_at=grant.expires_at)
    best: tuple[str, str] | None = None  # (tier name, role id)
    for role in role_ids:
        name = policy.roles.get(str(role))
        if name in config.tiers and (best is None or config.rank(name) > config.rank(best[0])):
            best = (name, str(role))
    if best is not None:
        return Assignment(config.tiers[best[0]], "role", role_id=best[1])
    return Assignment(config.tiers[config.default_tier], "default")


def period_bounds(now: float, policy: PeriodPolicy) -> tuple[float, float]:
    """The accounting period containing `now`: `(start, end)` as Unix times, start inclusive, end exclusive.

    Balances are keyed by the start, so a new period starts with a fresh balance and no cron job.
    """
    moment = datetime.fromtimestamp(now, UTC)
    if policy.kind == "days":
        length = timedelta(days=policy.days)
        count = (moment - policy.anchor) // length
        start = policy.anchor + count * length
        return start.timestamp(), (start + length).timestamp()
    start = moment.replace(day=policy.day, hour=0, minute=0, second=0, microsecond=0)
    if start > moment:
        start = _add_months(start, -1)
    return start.timestamp(), _add_months(start, 1).timestamp()


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


class TierSettings(BaseSettings):
    """Where the deployment's subscription tiers come from (this module)."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_", extra="ignore")

    tiers_file: Path | None = Field(default=None, description="IMAGINE_TIERS_FILE; empty = the shipped tiers.toml")

    def config(self) -> TiersConfig:
        return load_config(self.tiers_file) if self.tiers_file else load_config()
