"""Who may post a stored result where: the rules `/show` and the buttons that re-send a stored image follow (and the
web app will). Pure: plain values in, `RepostRefused` out.

A job's origin is its delivery record (`core.delivery.Delivery`: the server and channel it was made in) and its spec's
safety (`core.safety.safety_of`): a job whose outputs were not safety-checked was made in an age-restricted channel
under an "age-restricted" policy, and its images may only appear in age-restricted channels again.

Decided where the issue was silent: the bot runs no image classifier (it never imports torch), so an unchecked image is
refused outside age-restricted channels rather than checked there; a button click under a message follows the server
and age-restriction rules but not the owner rule, since the message is already public in that channel (Midjourney lets
anyone press U under anyone's grid and charges the clicker).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.delivery import Delivery
from core.errors import RepostRefused
from core.safety import safety_of
from core.spec import JobSpec

NOT_YOURS = "You can only show your own jobs (a server admin can show any job of this server); nothing was posted."
ANOTHER_SERVER = "That job was made in another server, so it can't be shown here; nothing was posted."
NOT_A_SERVER_JOB = "That job was not made in this server, so it can't be shown here; nothing was posted."
AGE_RESTRICTED = (
    "That job was made in an age-restricted channel, so its images can only be shown in an age-restricted channel; "
    "nothing was posted."
)


@dataclass(frozen=True)
class Place:
    """Where a result would be posted, and by whom."""

    guild_id: str  # "" outside a server (a DM)
    channel_id: str
    channel_nsfw: bool  # Discord marks the channel age-restricted
    caller: str  # the owner string of whoever asks ("discord:<user id>")
    caller_is_admin: bool = False  # an admin of `guild_id` (Manage Server, or a configured admin)


def made_unchecked(spec: JobSpec) -> bool:
    """Whether the job's outputs skipped the safety check (it was made in an age-restricted channel)."""
    return not safety_of(spec).check_outputs


def check_show(owner: str, spec: JobSpec, origin: Delivery | None, place: Place) -> None:
    """Refuse `/show` of a job unless the caller owns it (or is an admin of its server), it is shown in the server it
    was made in, and an unchecked job goes only to an age-restricted channel.

    Raises:
        RepostRefused: the message names the reason.
    """
    if owner != place.caller and not place.caller_is_admin:
        raise RepostRefused(NOT_YOURS)
    check_place(spec, origin, place)


def check_place(spec: JobSpec, origin: Delivery | None, place: Place) -> None:
    """Refuse posting a job's stored images in `place` unless it is the job's own server (or, for a job made in a DM,
    that DM) and, for a job made unchecked, an age-restricted channel (the rules for buttons that re-send a stored
    image).

    Raises:
        RepostRefused: the message names the reason.
    """
    if origin is None:
        raise RepostRefused(NOT_A_SERVER_JOB)
    if not origin.guild_id and origin.channel_id != place.channel_id:
        raise RepostRefused(NOT_A_SERVER_JOB)  # a job made in a DM stays in that DM
    if origin.guild_id != place.guild_id:
        raise RepostRefused(ANOTHER_SERVER)
    if made_unchecked(spec) and not place.channel_nsfw:
        raise RepostRefused(AGE_RESTRICTED)
