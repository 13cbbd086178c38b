"""Downloading attached files from Slack with the bot token, against the fake Slack (which serves
url_private_download only to the bot token, as Slack does)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aico.fakes.slack import FakeSlack
from core.adapters.slack_files import SlackFiles
from core.domain.attachments import MB, Attachment, Unreadable, sort_files

TOKEN = "xoxb-files-test-token"
CHANNEL = "C0FILES"
CONTENT = b"name,count\napples,3\npears,5\n"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN) as fake:
        yield fake


def shared(slack: FakeSlack, content: bytes = CONTENT, name: str = "fruit.csv") -> Attachment:
    """A file a person attached, as aico's intake accepts it from the message event."""
    record = slack.add_file(CHANNEL, name, "text/csv", content)
    [attachment], _ = sort_files([record])
    return attachment


def failure(files: SlackFiles, attachment: Attachment, max_bytes: int = MB) -> str:
    with pytest.raises(Unreadable) as caught:
        files.download(attachment, max_bytes)
    reason = str(caught.value)
    assert TOKEN not in reason and TOKEN not in repr(files)
    return reason


def test_the_bot_token_downloads_the_file(slack) -> None:
    files = SlackFiles.for_api(TOKEN, slack.api_url)
    assert files.download(shared(slack), MB) == CONTENT


def test_without_the_right_token_slack_answers_its_sign_in_page_and_that_is_said(slack) -> None:
    attachment = shared(slack)
    wrong = SlackFiles.for_api("xoxb-someone-else", slack.api_url)
    assert "sign-in page" in failure(wrong, attachment)
    assert "SLACK_BOT_TOKEN" in failure(SlackFiles.for_api("", slack.api_url), attachment)


def test_without_files_read_the_download_is_refused(slack) -> None:
    attachment = shared(slack)
    slack.missing_scopes.add("files:read")
    assert "files:read" in failure(SlackFiles.for_api(TOKEN, slack.api_url), attachment)


def test_the_size_cap_holds_while_reading_whatever_the_metadata_said(slack) -> None:
    big = shared(slack, b"x" * (2 * MB), "big.csv")
    lying = Attachment(big.id, big.name, big.mimetype, big.kind, 10, big.url)  # "10 bytes"
    files = SlackFiles.for_api(TOKEN, slack.api_url)
    assert failure(files, lying, max_bytes=MB) == "it is larger than 1.0 MB, the limit for it"


def test_a_file_slack_no_longer_has_is_a_404(slack) -> None:
    attachment = shared(slack)
    gone = Attachment(
        "F0GONE", "gone.csv", "text/csv", "text", 3, attachment.url.replace(attachment.id, "F0X")
    )
    assert failure(SlackFiles.for_api(TOKEN, slack.api_url), gone) == "Slack no longer has it (404)"


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"data")

    def log_message(self, *args) -> None:
        pass


def test_the_token_never_goes_to_a_host_that_is_not_slacks(slack) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        elsewhere = Attachment(
            "F1", "a.csv", "text/csv", "text", 4, f"http://localhost:{port}/a.csv"
        )
        reason = failure(SlackFiles.for_api(TOKEN, slack.api_url), elsewhere)
        assert reason == "its address is not one of Slack's"
        assert _Recorder.seen == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_that_does_not_answer_times_out() -> None:
    with socket.socket() as mute:  # accepts the connection, never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        files = SlackFiles.for_api(TOKEN, f"http://127.0.0.1:{port}/api/", timeout=0.3)
        stuck = Attachment("F1", "a.csv", "text/csv", "text", 4, f"http://127.0.0.1:{port}/a")
        assert "could not be reached" in failure(files, stuck)
