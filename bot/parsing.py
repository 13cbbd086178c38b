"""`/aico …` text -> a command. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

VERBS = (
    "task",
    "help",
    "status",
    "history",
    "show",
    "cancel",
    "retry",
    "budget",
    "scale",
    "recover",
    "config",
    "project",
)
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
    if len(rest) > 1 or (rest and not rest[0].isdecimal()):
        raise ValueError(
            "Use `/aico history [n]` for yours, `/aico history channel [n]` for this channel's."
        )
    limit = int(rest[0]) if rest else HISTORY_DEFAULT
    if not 1 <= limit <= HISTORY_MAX:
        raise ValueError(f"Ask for 1 to {HISTORY_MAX} tasks.")
    return HistoryQuery(channel, limit)


@dataclass(frozen=True)
class BudgetChange:
    scope: str  # "user" or "channel"
    who: str  # a user id; "" for this channel
    usd: float


_USER = re.compile(r"^(?:<@([UW][A-Z0-9]+)(?:\|[^>]*)?>|([UW][A-Z0-9]+))$")
BUDGET_USAGE = (
    "Use `/aico budget` to see where you stand, or (admins) `/aico budget user <user id> <usd>`"
    " / `/aico budget channel <usd>` to raise a limit for today."
)


def budget_change(args: str) -> BudgetChange | None:
    """`user <id> <usd>` or `channel <usd>`; None for no arguments; ValueError says how."""
    words = args.split()
    if not words:
        return None
    scope = words[0].lower()
    if scope == "user" and len(words) == 3 and (m := _USER.match(words[1])):
        return BudgetChange("user", m.group(1) or m.group(2), _usd(words[2]))
    if scope == "channel" and len(words) == 2:
        return BudgetChange("channel", "", _usd(words[1]))
    raise ValueError(BUDGET_USAGE)


def _usd(text: str) -> float:
    try:
        value = float(text.removeprefix("$"))
    except ValueError:
        raise ValueError(f"`{text[:20]}` is not an amount in US dollars. {BUDGET_USAGE}") from None
    if not 0 < value < 1_000_000:
        raise ValueError("A budget is a positive amount of US dollars, like `25`.")
    return value


def scale_request(args: str) -> int | None:
    """`/aico scale <n>` -> n; `/aico scale auto` -> None; ValueError for anything else."""
    word = args.strip().lower()
    if word == "auto":
        return None
    if not word.isdigit():
        raise ValueError(
            "Use `/aico scale <n>` to pin the pool to n task workers, "
            "or `/aico scale auto` to hand it back to the scaling policy."
        )
    return int(word)


@dataclass(frozen=True)
class TaskOptions:
    text: str
    repo: str = ""  # --repo NAME: the repository for its context ("": the channel's, else all)
    code: bool = False  # --code: a change on a branch, for review


TASK_USAGE = (
    "Use `/aico task [--repo <name>] [--code] <what to do>`: `--repo` picks the repository "
    "whose code is the context, `--code` asks for a change on a branch that you review."
)


def task_options(args: str) -> TaskOptions:
    """`[--repo NAME | --repo=NAME] [--code] <text>` (options first); ValueError says how."""
    rest, repo, code = args.strip(), "", False
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, _, value = word.partition("=")
        if name == "--code" and not value:
            code = True
        elif name == "--repo":
            if not value:
                value, _, rest = rest.partition(" ")
                rest = rest.lstrip()
            if not value or value.startswith("--"):
                raise ValueError("`--repo` needs a repository's name. " + TASK_USAGE)
            repo = value
        else:
            raise ValueError(f"I don't know the option `{word[:30]}`. " + TASK_USAGE)
    return TaskOptions(rest, repo, code)


def config_request(args: str) -> tuple[str, str] | None:
    """`/aico config` -> None (show); `/aico config repo <name|none>` -> ("repo", name or "")."""
    words = args.split()
    if not words:
        return None
    if words[0].lower() == "repo" and len(words) == 2:
        return ("repo", "" if words[1].lower() == "none" else words[1])
    raise ValueError(
        "Use `/aico config` to see this channel's settings, or (admins) "
        "`/aico config repo <name>` to set its default repository (`none` to clear it)."
    )
