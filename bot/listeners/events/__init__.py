from bot.listeners.events import app_home, session_stopped, thread_replies


def register(app, services):
    thread_replies.register(app, services)
    app_home.register(app, services)
    session_stopped.register(app, services)
