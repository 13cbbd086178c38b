from bot.listeners.events import thread_replies


def register(app, services):
    thread_replies.register(app, services)
