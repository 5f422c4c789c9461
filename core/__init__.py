"""What the bot and the worker share: the job spec, the prompt language, settings and Redis keys.

Dependency-light on purpose: nothing here imports discord or torch, so the bot can use it without pulling in
the GPU stack, and the worker can use it without pulling in Discord.
"""
