"""`/aico …` text -> a command. Pure."""

from __future__ import annotations

from dataclasses import dataclass

VERBS = ("task", "help")


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
