"""The repost rules of `/show` and of buttons that re-send a stored image, as a table of cases."""

from __future__ import annotations

import pytest

from core import reposting
from core.delivery import Delivery
from core.errors import RepostRefused
from core.reposting import Place
from core.safety import Safety, with_safety
from tests.core.test_jobs import make_spec

OWNER = "discord:100"
CHECKED = with_safety(make_spec(), Safety("nsfw", check_outputs=True))
UNCHECKED = with_safety(make_spec(), Safety(check_outputs=False))
ORIGIN = Delivery(application_id="1", channel_id="500", user_id="100", guild_id="900")
DM_ORIGIN = Delivery(application_id="1", channel_id="77", user_id="100", guild_id="")


def place(guild: str = "900", channel: str = "501", nsfw: bool = False, caller: str = OWNER, admin: bool = False):
    return Place(guild, channel, nsfw, caller, admin)


ALLOWED = [
    ("own job, same server, ordinary channel", CHECKED, ORIGIN, place()),
    ("own unchecked job in an age-restricted channel", UNCHECKED, ORIGIN, place(nsfw=True)),
    ("an admin shows a member's job of this server", CHECKED, ORIGIN, place(caller="discord:200", admin=True)),
    ("own DM job in the same DM", CHECKED, DM_ORIGIN, place(guild="", channel="77")),
]

REFUSED = [
    ("another member's job", CHECKED, ORIGIN, place(caller="discord:200"), reposting.NOT_YOURS),
    ("own job in another server", CHECKED, ORIGIN, place(guild="901"), reposting.ANOTHER_SERVER),
    ("an admin of another server", CHECKED, ORIGIN, place(guild="901", caller="discord:200", admin=True),
     reposting.ANOTHER_SERVER),
    ("own unchecked job in an ordinary channel", UNCHECKED, ORIGIN, place(), reposting.AGE_RESTRICTED),
    ("an admin, unchecked job, ordinary channel", UNCHECKED, ORIGIN, place(caller="discord:200", admin=True),
     reposting.AGE_RESTRICTED),
    ("a job with no Discord origin (CLI)", CHECKED, None, place(), reposting.NOT_A_SERVER_JOB),
    ("own DM job in a server", CHECKED, DM_ORIGIN, place(), reposting.NOT_A_SERVER_JOB),
    ("own DM job in another DM", CHECKED, DM_ORIGIN, place(guild="", channel="78"), reposting.NOT_A_SERVER_JOB),
]


@pytest.mark.parametrize(("case", "spec", "origin", "where"), ALLOWED, ids=[c[0] for c in ALLOWED])
def test_show_allowed(case, spec, origin, where) -> None:
    """These may be shown."""
    reposting.check_show(OWNER, spec, origin, where)


@pytest.mark.parametrize(("case", "spec", "origin", "where", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_show_refused_with_the_reason(case, spec, origin, where, message) -> None:
    """These are refused, and the refusal names why."""
    with pytest.raises(RepostRefused) as refused:
        reposting.check_show(OWNER, spec, origin, where)
    assert str(refused.value) == message


def test_buttons_skip_the_owner_rule_but_keep_the_others() -> None:
    """Pressing U under someone else's grid in its own server is fine; its age restriction still holds."""
    reposting.check_place(CHECKED, ORIGIN, place(caller="discord:200"))
    with pytest.raises(RepostRefused, match="age-restricted"):
        reposting.check_place(UNCHECKED, ORIGIN, place(caller="discord:200"))
    with pytest.raises(RepostRefused, match="another server"):
        reposting.check_place(CHECKED, ORIGIN, place(guild="901"))


def test_a_spec_without_safety_counts_as_unchecked() -> None:
    """A spec that carries no safety (made before the bot set one, or by the CLI) is treated as unchecked: refused
    outside age-restricted channels rather than risked."""
    assert reposting.made_unchecked(make_spec())
    assert not reposting.made_unchecked(CHECKED)
