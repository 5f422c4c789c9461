"""The emulator's command options: subcommand nesting and resolved USER/ROLE objects, as Discord sends them."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from discord_emulator import payloads
from discord_emulator.state import Attachment, State

COMMAND = {
    "name": "admin",
    "options": [
        {"name": "tier", "type": 2, "options": [
            {"name": "set", "type": 1, "options": [{"name": "member", "type": 6}, {"name": "tier", "type": 3}]},
            {"name": "roles", "type": 1, "options": [{"name": "role", "type": 8}]},
        ]},
        {"name": "usage", "type": 1, "options": [{"name": "member", "type": 6}]},
    ],
}  # fmt: skip


def test_subcommand_of_a_group_nests_options_and_resolves_a_member_with_permissions() -> None:
    """`admin tier set`: group > subcommand > options; the member comes resolved as user + member (roles, perms)."""
    state = State()
    role = state.add_role("mods", 1 << 5)
    alice = state.add_user("alice")
    state.add_member(alice, [role])
    options, resolved = payloads.command_options(state, COMMAND, ["tier", "set"], {"member": alice, "tier": "pro"})
    assert options == [{"name": "tier", "type": 2, "options": [{"name": "set", "type": 1, "options": [
        {"name": "member", "type": 6, "value": alice.id}, {"name": "tier", "type": 3, "value": "pro"},
    ]}]}]  # fmt: skip
    assert resolved["users"][alice.id]["username"] == "alice"
    assert resolved["members"][alice.id]["roles"] == [role.id]
    assert int(resolved["members"][alice.id]["permissions"]) & (1 << 5)


def test_a_stranger_has_no_member_data_and_roles_resolve() -> None:
    """A user outside the guild resolves as a user only; a ROLE option resolves the role object."""
    state = State()
    ghost = state.add_user("ghost")
    _, resolved = payloads.command_options(state, COMMAND, ["usage"], {"member": ghost})
    assert ghost.id in resolved["users"] and "members" not in resolved
    role = state.add_role("boosters", 0)
    _, resolved = payloads.command_options(state, COMMAND, ["tier", "roles"], {"role": role})
    assert resolved["roles"][role.id]["name"] == "boosters"


def test_unknown_subcommands_and_options_are_errors() -> None:
    """Naming a subcommand or an option the synced command lacks raises, as Discord's client could not send it."""
    with pytest.raises(ValueError, match="no subcommand 'nope'"):
        payloads.command_options(State(), COMMAND, ["nope"], {})
    with pytest.raises(ValueError, match="no option"):
        payloads.command_options(State(), COMMAND, ["usage"], {"colour": "red"})


def test_an_attachment_option_carries_its_id_and_resolves_as_an_uploaded_attachment() -> None:
    """ATTACHMENT (type 11): the value is the id; `resolved.attachments` holds it with its size, URL and, for an
    image, its width and height, as Discord sends them; the emulator keeps it to serve."""
    image = io.BytesIO()
    Image.new("RGB", (30, 20)).save(image, "PNG")
    state = State()
    command = {"name": "describe", "options": [{"type": 11, "name": "image", "description": "an image"}]}
    upload = Attachment("", "cat.png", image.getvalue(), "image/png")
    options, resolved = payloads.command_options(state, command, [], {"image": upload}, base_url="http://emu")
    [option] = options
    found = resolved["attachments"][option["value"]]
    assert option["type"] == 11 and found["id"] == option["value"]
    assert (found["width"], found["height"], found["size"], found["content_type"]) == (30, 20, len(upload.data),
                                                                                       "image/png")
    assert found["url"] == f"http://emu/attachments/uploads/{found['id']}/cat.png"
    assert state.uploads[found["id"]].data == upload.data
