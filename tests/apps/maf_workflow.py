"""Agent Framework workflows checkpointed on outlast's store, run as a child process by
tests/test_agent_framework_crash.py.

``python -m tests.apps.maf_workflow URL LOG MODE [HANG]``

* ``chain``: plan -> research -> write, each appending a message to the conversation it passes
  on; ``HANG`` names the executor that hangs (to be SIGKILLed) after logging ``hang NAME``.
* ``resume``: resumes workflow ``report`` from its latest checkpoint and prints the output.
* ``ask``: a reviewer executor asks for approval (``request_info``) and the process exits
  with the request pending; prints the request id.
* ``answer``: a new process answers that request from the latest checkpoint of ``review``.

Every executor appends ``start NAME`` / ``done NAME`` to LOG. Outputs are printed as JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent_framework import (
    Executor,
    Message,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
)

from outlast.integrations.agent_framework import OutlastCheckpointStorage

LOG: Path | None = None
HANG: str | None = None


def log(line: str) -> None:
    if LOG is not None:
        with LOG.open("a") as f:
            f.write(line + "\n")
            f.flush()


class Step(Executor):
    """Appends one assistant message and passes the conversation on (the last one yields it)."""

    def __init__(self, id: str, last: bool = False) -> None:
        super().__init__(id=id)
        self.last = last

    @handler
    async def work(self, conversation: list[Message],
                   ctx: WorkflowContext[list[Message], list[Message]]) -> None:
        log(f"start {self.id}")
        if self.id == HANG:
            log(f"hang {self.id}")
            time.sleep(600)  # SIGKILLed here
        said = Message(role="assistant", contents=[f"{self.id} saw {len(conversation)}"])
        out = [*conversation, said]
        log(f"done {self.id}")
        if self.last:
            await ctx.yield_output(out)
        else:
            await ctx.send_message(out)


def chain(storage: OutlastCheckpointStorage | None) -> Any:
    plan, research, write = Step("plan"), Step("research"), Step("write", last=True)
    return WorkflowBuilder(name="report", start_executor=plan, checkpoint_storage=storage) \
        .add_chain([plan, research, write]).build()


@dataclasses.dataclass
class Approval:
    """What the reviewer asks a human: a user dataclass, stored in the checkpoint."""

    draft: str
    reviewer: str


class Reviewer(Executor):
    @handler
    async def review(self, draft: str, ctx: WorkflowContext[str, str]) -> None:
        log("start review")
        await ctx.request_info(Approval(draft, "alice"), str)

    @response_handler
    async def decided(self, request: Approval, answer: str, ctx: WorkflowContext[str, str]) -> None:
        log(f"answered {answer}")
        await ctx.yield_output(f"{request.draft}: {answer} by {request.reviewer}")


def review(storage: OutlastCheckpointStorage) -> Any:
    reviewer = Reviewer(id="reviewer")
    return WorkflowBuilder(name="review", start_executor=reviewer,
                           checkpoint_storage=storage).build()


def texts(outputs: list[Any]) -> list[list[str]]:
    return [[m.text for m in conversation] for conversation in outputs]


async def main(url: str, mode: str) -> None:
    with OutlastCheckpointStorage(url) as storage:
        if mode == "chain":
            result = await chain(storage).run([Message(role="user", contents=["hi"])])
            print(json.dumps(texts(result.get_outputs())))
        elif mode == "resume":
            latest = await storage.get_latest(workflow_name="report")
            assert latest is not None, "no checkpoint to resume from"
            result = await chain(storage).run(checkpoint_id=latest.checkpoint_id)
            print(json.dumps(texts(result.get_outputs())))
        elif mode == "ask":
            result = await review(storage).run("draft 1")
            print(json.dumps([r.request_id for r in result.get_request_info_events()]))
        elif mode == "answer":
            latest = await storage.get_latest(workflow_name="review")
            assert latest is not None, "no checkpoint to resume from"
            (request_id,) = latest.pending_request_info_events
            result = await review(storage).run(checkpoint_id=latest.checkpoint_id,
                                               responses={request_id: "approved"})
            print(json.dumps(result.get_outputs()))


if __name__ == "__main__":
    LOG = Path(sys.argv[2])
    HANG = sys.argv[4] if len(sys.argv) > 4 else None
    asyncio.run(main(sys.argv[1], sys.argv[3]))
