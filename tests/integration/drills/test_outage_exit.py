"""Every process stops cleanly while the broker is away, and `aico status` still reports.

pika 1.4 has no `is_opening`: a stop during an outage once raised AttributeError from the link's
shutdown in every process, and `aico status` printed a traceback.
"""

from __future__ import annotations

import subprocess

from aico.procfile import read_procfile
from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import task_id_of, wait_for_answer

TRACES = ("Traceback", "AttributeError", "Exception in thread")


def test_each_process_stops_cleanly_during_a_broker_outage(rabbit, tmp_path, slack, claude):
    # Given the whole stack, connected and working
    stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    try:
        wait_for_answer(slack, task_id_of(stack.command("task before the outage")[1]))

        # When the broker goes away (stop_app closes every client connection before it returns)
        rabbit.stop_app()
        status = subprocess.run(
            [*read_procfile()["bot"][:1], "status"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        codes = stack.stop()
    finally:
        rabbit.start_app()

    # Then `aico status` reports without a traceback, saying the queues cannot be read
    assert status.returncode == 0, status.stderr
    assert not any(trace in status.stdout + status.stderr for trace in TRACES), status.stderr
    # And every process exited 0 with nothing but ordinary lines in its log
    assert codes == {name: 0 for name in codes}, f"{codes}\n{stack.logs()}"
    for name in stack.processes.commands:
        log = stack.processes.log(name)
        assert not any(trace in log for trace in TRACES), f"--- {name}\n{log[-3000:]}"
