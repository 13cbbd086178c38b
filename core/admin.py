"""The operator's commands: `aico status` and `aico db backup|rebuild`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from core import bootstrap
from core.adapters.rabbitmq import DEAD, RESULTS, TASKS
from core.blocks import status_blocks
from core.config import Settings
from core.errors import AicoError
from core.status import Status

_BOLD = re.compile(r"\*([^*\n]+)\*")


def status(settings: Settings) -> int:
    """What `/aico status` shows, as text."""
    store = bootstrap.store(settings)
    link = bootstrap.link(settings, "status")
    link.connected.wait(3.0)
    try:
        report = Status(store, lambda q: link.queue_depth(q).result(3.0), (TASKS, RESULTS, DEAD))
        _text, body = status_blocks(report.report())
        for block in body:
            text = block.get("text", {}).get("text") or block["elements"][0]["text"]
            print(_BOLD.sub(r"\1", text.replace("&lt;", "<").replace("&gt;", ">")))
    finally:
        link.close()
        store.close()
    return 0


def db(settings: Settings, action: str, target: str = "") -> int:
    store = bootstrap.store(settings)
    try:
        if action == "backup":
            path = Path(target)
            store.backup(path)
            print(f"backed up the event store to {path}")
        else:
            print(f"rebuilt the projections of {store.rebuild():,} task(s) from their events")
    except AicoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
