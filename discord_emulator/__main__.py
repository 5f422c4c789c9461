"""Run the emulator: `python -m discord_emulator --port 8765`, then point a bot at the printed environment.

The first lines it prints are `NAME=value` settings for a bot process, up to the line `Ctrl-C to stop.` (which a
program starting it, such as `python -m bench interactions`, reads them up to).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from discord_emulator.control import CONTROL_PREFIX, ControlledEmulator

READY_LINE = "Ctrl-C to stop."


async def serve(host: str, port: int) -> None:
    async with ControlledEmulator(host=host, port=port) as emu:
        print(f"DISCORD_API_BASE={emu.api_base}")
        print(f"DISCORD_GATEWAY_URL={emu.ws_url}")
        print(f"DISCORD_TOKEN={emu.token}")
        state = emu.state
        print(f"DEV_GUILD_ID={state.guild_id}")
        print(f"guild {state.guild_id}: #general {state.default_channel.id}, #nsfw-art {state.nsfw_channel.id}")
        print(f"control endpoint: {emu.url}{CONTROL_PREFIX} (see discord_emulator/control.py)")
        print(READY_LINE, flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
