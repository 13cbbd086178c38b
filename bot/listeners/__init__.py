from bot.listeners import actions, commands


def register(app, services):
    commands.register(app, services)
    actions.register(app, services)
