"""The responses in progress of one session: the default one, the out-of-band ones, and their tasks.

`ResponseTasks` starts each `ResponseRun` as a task of the connection's task group, finds runs by response or
item id, cancels one and waits until its closing events are queued (so a cancel's ``response.done`` precedes
whatever the next client event produces, docs/PROTOCOL.md §6.1), and aborts them all when the session ends.
Event loop only.
"""

from __future__ import annotations

import asyncio

from realtime.session.response import ResponseRun
from realtime.session.response_lifecycle import CancelReason


class ResponseTasks:
    """The running responses of one session.

    Attributes:
        default: the in-band response in progress (at most one), or None.
        quiet: set while no response is in progress (the shutdown drain waits on it).
    """

    def __init__(self) -> None:
        self.default: ResponseRun | None = None
        self.quiet = asyncio.Event()
        self.quiet.set()
        self._runs: dict[str, tuple[ResponseRun, asyncio.Task[None]]] = {}

    @property
    def out_of_band(self) -> int:
        """Out-of-band responses in progress."""
        return sum(1 for run, _ in self._runs.values() if not run.in_default_conversation)

    def start(self, run: ResponseRun, tasks: asyncio.TaskGroup) -> None:
        """Run ``run`` as a task of ``tasks``; an in-band run becomes the default response."""
        task = tasks.create_task(run.run(), name=f"response {run.record.id}")
        self._runs[run.record.id] = (run, task)
        self.quiet.clear()
        if run.in_default_conversation:
            self.default = run
        task.add_done_callback(lambda _: self._forget(run))

    def _forget(self, run: ResponseRun) -> None:
        self._runs.pop(run.record.id, None)
        if self.default is run:
            self.default = None
        if not self._runs:
            self.quiet.set()

    def find(self, response_id: str | None) -> ResponseRun | None:
        """The run of ``response_id``; for None the default run, else the newest one."""
        if response_id is not None:
            entry = self._runs.get(response_id)
            return entry[0] if entry is not None else None
        return self.default or next((run for run, _ in reversed(self._runs.values())), None)

    def of_item(self, item_id: str) -> ResponseRun | None:
        """The run in progress that produced ``item_id``, if any."""
        for run, _ in self._runs.values():
            if any(item.id == item_id for item in run.record.output):
                return run
        return None

    async def cancel(self, run: ResponseRun, reason: CancelReason) -> None:
        """Cancel ``run`` and wait until its closing events are queued."""
        entry = self._runs.get(run.record.id)
        run.cancel(reason)
        if entry is not None:
            await asyncio.wait({entry[1]})

    def abort_all(self) -> None:
        """Stop every run without closing events; the sender drops their queued audio."""
        for run, task in list(self._runs.values()):
            run.drop_audio()
            task.cancel()
