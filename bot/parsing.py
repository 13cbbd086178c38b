"""`/aico …` text -> a command. Pure."""

from __future__ import annotations

from dataclasses import dataclass

VERBS = ("task", "help", "status", "history", "show", "cancel", "retry")
HISTORY_DEFAULT, HISTORY_MAX = 10, 50


@dataclass(frozen=True)
class Command:
    verb: str  # one of VERBS, or "unknown"
    args: str = ""
    word: str = ""  # what the user typed as the verb


def parse(text: str) -> Command:
    words = (text or "").strip().split(maxsplit=1)
    if not words:
        return Command("help")
    word = words[0]
    args = words[1] if len(words) > 1 else ""
    verb = word.lower()
    return Command(verb, args, word) if verb in VERBS else Command("unknown", args, word)


@dataclass(frozen=True)
class HistoryQuery:
    channel: bool  # the channel's tasks, rather than the user's own
    limit: int


def history_query(args: str) -> HistoryQuery:
    """`[channel] [n]`; ValueError says what is wrong."""
    words = args.lower().split()
    channel = bool(words) and words[0] == "channel"
    rest = words[1:] if channel else words
    if len(rest) > 1 or (rest and not rest[0].isdigit()):
        raise ValueError(
            "Use `/aico history [n]` for yours, `/aico history channel [n]` for this channel's."
        )
    limit = int(rest[0]) if rest else HISTORY_DEFAULT
    if not 1 <= limit <= HISTORY_MAX:
        raise ValueError(f"Ask for 1 to {HISTORY_MAX} tasks.")
    return HistoryQuery(channel, limit)
