"""JSON as aico writes it everywhere (the store's events and views, the queues' messages):
compact, UTF-8 as it is, through orjson (several times faster than the json module on the hot
path: every append encodes a task's whole view) and with the json module as the fallback for
what orjson refuses (integers past 64 bits, NaN on the way in): the text read back is the same."""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:  # a lone surrogate then fails here too, as before
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(raw: str | bytes) -> Any:
    """JSON text to Python; ValueError (json.JSONDecodeError) for what is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # NaN and Infinity, which json.dumps wrote; else its own error
