"""bench/profile.py's pure parts: a sample goes to the step whose code is on its stack, and the
shares become milliseconds that add up to the process's CPU per task."""

from __future__ import annotations

from collections import Counter

from bench.profile import classify, is_json, profile, read_samples

STORE = "SqliteEventStore._write_loop (/x/core/adapters/sqlite_store.py:146)"
BOLT = "App.dispatch (/x/site-packages/slack_bolt/app/app.py:612)"
SLACK = "WebClient.chat_postMessage (/x/site-packages/slack_sdk/web/client.py:3650)"
HANDLER = "ResultHandler._handle (/x/workers/result/handler.py:228)"
DUMPS = "dumps (/x/lib/python3.11/json/__init__.py:234)"


def test_a_store_append_made_by_a_bolt_listener_is_the_stores():
    assert classify([BOLT, "handle_aico (/x/bot/listeners/commands/aico.py:31)", STORE]) == "store"
    assert classify([BOLT, "handle_aico (/x/bot/listeners/commands/aico.py:31)"]) == "intake"
    assert classify([HANDLER, SLACK]) == "slack"
    assert classify(["Thread.run (/usr/lib/python3.11/threading.py:982)", HANDLER]) == "aico"
    assert classify(["Condition.wait (/usr/lib/python3.11/threading.py:327)"]) == "other"
    assert is_json([HANDLER, SLACK, DUMPS]) and not is_json([HANDLER, SLACK])


def test_samples_inside_an_import_are_left_out(tmp_path):
    raw = tmp_path / "bot.txt"
    raw.write_text(
        f"{BOLT};{STORE} 30\n"
        f"{HANDLER};{SLACK};{DUMPS} 10\n"
        "_find_and_load (<frozen importlib._bootstrap>:1176);x (/x/core/a.py:1) 60\n"
    )
    steps, in_json, total = read_samples(raw)
    assert steps == Counter({"store": 30, "slack": 10}) and (in_json, total) == (10, 40)


def test_the_shares_become_milliseconds_per_task_that_add_up():
    table = profile({"result": (Counter({"store": 30, "slack": 10}), 10, 40)}, {"result": 2.0})
    assert table["result"]["store"] == 1.5 and table["result"]["slack"] == 0.5
    assert table["result"]["json"] == 0.5 and table["result"]["total"] == 2.0
