"""The Discord surface: one extension module per feature, each ending in `async def setup(bot)`.

Cogs stay thin: validate, defer, call a service, render. The work happens in `services/`.
"""
