"""Run the emulator by hand: `python -m discord_emulator --port 8765`, then point a bot at the printed URLs."""

from __future__ import annotations

import argparse
import asyncio
import logging

from discord_emulator.server import DiscordEmulator


async def serve(host: str, port: int) -> None:
    async with DiscordEmulator(host=host, port=port) as emu:
        print(f"DISCORD_API_BASE={emu.api_base}")
        print(f"DISCORD_GATEWAY_URL={emu.ws_url}")
        print(f"DISCORD_TOKEN={emu.token}")
        state = emu.state
        print(f"guild {state.guild_id}: #general {state.default_channel.id}, #nsfw-art {state.nsfw_channel.id}")
        print("Ctrl-C to stop.", flush=True)
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
