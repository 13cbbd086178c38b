from bot.listeners import commands


def register(app, services):
    commands.register(app, services)
