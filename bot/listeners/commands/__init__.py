from bot.listeners.commands import aico


def register(app, services):
    aico.register(app, services)
