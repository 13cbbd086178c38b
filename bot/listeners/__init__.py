from bot.listeners import commands


def register(app, intake, max_chars):
    commands.register(app, intake, max_chars)
