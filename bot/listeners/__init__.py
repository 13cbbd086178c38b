from bot.listeners import actions, commands, events


def register(app, services):
    commands.register(app, services)
    actions.register(app, services)
    events.register(app, services)
