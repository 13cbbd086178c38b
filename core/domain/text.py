"""Text on its way to Slack: escaped so it pings no one, Markdown as mrkdwn, split to fit."""

from __future__ import annotations

import re

SECTION_LIMIT = 3000  # Slack's limit for a section block's text
MAX_SECTIONS = 4  # longer answers go to the thread as a file
INLINE_LIMIT = SECTION_LIMIT * MAX_SECTIONS - 200

_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_FENCE = re.compile(r"(```.*?```)", re.DOTALL)


def escape(text: str) -> str:
    """Slack's three control characters, so `<!channel>` or `<@U1>` stay plain text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Claude's Markdown as Slack mrkdwn, escaped; code blocks are left as they are."""
    parts = _FENCE.split(escape(markdown))
    return "".join(part if part.startswith("```") else _inline(part) for part in parts)


def _inline(text: str) -> str:
    text = _LINK.sub(lambda m: f"<{_unescape(m.group(2))}|{m.group(1)}>", text)
    text = _HEADING.sub(r"*\1*", text)
    return _BOLD.sub(r"*\1*", text)


def _unescape(url: str) -> str:
    # A URL inside <...> must not itself contain < or >; & stays escaped as Slack expects.
    return url.replace("&lt;", "").replace("&gt;", "")


def split(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraph, line or word boundaries."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = _cut_point(text, limit)
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip("\n")
    if text.strip():
        pieces.append(text)
    return pieces


def _cut_point(text: str, limit: int) -> int:
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, limit // 2, limit)
        if at > 0:
            return at
    entity = text.rfind("&", limit - 5, limit)  # never cut &amp; &lt; &gt; in two
    return entity if entity > 0 and ";" in text[entity : limit + 5] else limit


def preview(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters, for status lines and notifications."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
