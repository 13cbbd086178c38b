from bot.listeners.commands import aico


def register(app, intake, max_chars):
    aico.register(app, intake, max_chars)
