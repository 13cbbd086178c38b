from bot.listeners.actions import task_buttons


def register(app, services):
    task_buttons.register(app, services)
