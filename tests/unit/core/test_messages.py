import pytest

from core.domain.messages import ResultMessage, TaskMessage
from core.errors import DecodeError

TASK = TaskMessage("abc", "résumé ✓ <!here>", "U1", "C1", "1.000100", 10.5)


def test_a_task_message_round_trips_with_non_ascii_text():
    assert TaskMessage.decode(TASK.encode()) == TASK


def test_result_messages_round_trip():
    msg = ResultMessage("abc", "completed", "C1", "1.1", 2.0, text="ok", usage={"input_tokens": 3})
    assert ResultMessage.decode(msg.encode()) == msg


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b"not json",
        b"[]",
        b'{"kind":"result","v":1}',
        b'{"kind":"task","v":2,"task_id":"a"}',
        b'{"kind":"task","v":1,"task_id":"a","prompt":"p","user":"U","channel":"C",'
        b'"thread_ts":"","submitted_at":1}',
        b'{"kind":"task","v":1,"task_id":"a","prompt":"p","user":"U","channel":"C",'
        b'"thread_ts":"1.1","submitted_at":1,"extra":1}',
    ],
)
def test_anything_malformed_is_a_decode_error(raw):
    with pytest.raises(DecodeError):
        TaskMessage.decode(raw)


def test_an_unknown_result_event_is_refused():
    bad = ResultMessage("a", "completed", "C", "1.1", 1.0).encode().replace(b"completed", b"oops")
    with pytest.raises(DecodeError):
        ResultMessage.decode(bad)


def test_the_route_of_a_broken_task_message_can_still_be_read():
    from core.domain.messages import salvage_route

    broken = b'{"kind":"task","v":1,"task_id":"abc","channel":"C1","thread_ts":"1.2","prompt":7}'
    assert salvage_route(broken) == ("abc", "C1", "1.2")
    assert salvage_route(b"garbage") is None
    assert salvage_route(b'{"task_id":"abc","channel":"C1"}') is None
    assert salvage_route(b'{"task_id":1,"channel":"C1","thread_ts":"1.2"}') is None
