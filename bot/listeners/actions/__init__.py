from bot.listeners.actions import (
    alert_buttons,
    change_buttons,
    feedback_buttons,
    home_buttons,
    project_buttons,
    task_buttons,
)


def register(app, services):
    task_buttons.register(app, services)
    alert_buttons.register(app, services)
    home_buttons.register(app, services)
    change_buttons.register(app, services)
    feedback_buttons.register(app, services)
    project_buttons.register(app, services)
