import pytest

from core.domain import events
from core.domain.events import Event, fold
from core.domain.task import TaskStatus, clean_prompt, is_task_id, new_task_id
from core.errors import InvalidInput


def test_task_ids_are_short_typeable_and_unique():
    ids = {new_task_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(is_task_id(i) for i in ids)


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\x00"])
def test_an_empty_task_is_refused_with_how_to_ask(text):
    with pytest.raises(InvalidInput, match="/aico task &lt;what to do&gt;"):
        clean_prompt(text, 100)


def test_an_oversized_task_is_refused_with_the_limit():
    with pytest.raises(InvalidInput, match="101 characters; the limit is 100"):
        clean_prompt("x" * 101, 100)


def test_a_prompt_is_trimmed_and_keeps_non_ascii():
    assert clean_prompt("  Übersetze 日本語 \x00 ", 100) == "Übersetze 日本語"


def _event(type_, version, **data):
    return Event("t1", type_, data, at=float(version), version=version)


def test_events_fold_into_the_current_state():
    view = fold(
        [
            _event(events.SUBMITTED, 1, user="U1", channel="C1", prompt="p"),
            _event(events.POSTED, 2, thread_ts="9.9"),
            _event(events.QUEUED, 3),
            _event(events.STARTED, 4),
            _event(events.COMPLETED, 5, usage={"input_tokens": 2}),
        ]
    )
    assert view.status is TaskStatus.DONE
    assert (view.thread_ts, view.started_at, view.finished_at) == ("9.9", 4.0, 5.0)
    assert view.usage == {"input_tokens": 2}


def test_a_final_state_is_never_left():
    view = fold(
        [
            _event(events.SUBMITTED, 1, user="U1", channel="C1", prompt="p"),
            _event(events.FAILED, 2, error="boom"),
            _event(events.STARTED, 3),
        ]
    )
    assert view.status is TaskStatus.FAILED
    assert view.error == "boom"


def test_a_late_queued_event_does_not_take_a_running_task_back():
    view = fold(
        [
            _event(events.SUBMITTED, 1, user="U1", channel="C1", prompt="p"),
            _event(events.POSTED, 2, thread_ts="9.9"),
            _event(events.STARTED, 3),
            _event(events.QUEUED, 4),
        ]
    )
    assert view.status is TaskStatus.RUNNING and view.version == 4
