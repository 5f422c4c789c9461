"""The discord.py front end: receives commands, validates, admits and enqueues. Never imports torch."""
