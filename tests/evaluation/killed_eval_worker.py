"""`theworld eval` in a process that dies by SIGKILL half-way through writing a record.

Started by `accelerate launch ... killed_eval_worker.py eval ...` (tests/evaluation/test_eval_processes.py):
the process with RANK equal to THEWORLD_TEST_KILL_RANK writes THEWORLD_TEST_KILL_AFTER records,
then half of the next one, then kills itself; the launcher then stops the other processes. What
is left on disk is what a power cut or an out-of-memory kill leaves.
"""

from __future__ import annotations

import os
import signal
import sys

from theworld.cli.main import main
from theworld.evaluation import outputs

if os.environ.get("RANK") == os.environ["THEWORLD_TEST_KILL_RANK"]:
    kill_after = int(os.environ["THEWORLD_TEST_KILL_AFTER"])
    write = outputs.Writer.write
    written = []

    def write_then_die(self: outputs.Writer, record: dict) -> None:
        if len(written) == kill_after:
            handle = self.handles[record.get("correct") is not None]
            handle.write('{"id": "' + str(record["id"]) + '", "predic')  # half a record reaches the disk
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, record)
        written.append(record["id"])

    outputs.Writer.write = write_then_die

sys.exit(main(sys.argv[1:]))
