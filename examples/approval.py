"""Human in the loop: draft an email, wait for approval (with a reminder and a timeout), then
send or discard it.

    python examples/approval.py                 # starts run "approval-1" and waits for it
    outlast send approval-1 approve '"yes"'     # in another shell (or '"no"')
    # or: outlast serve examples.approval:app, then
    #     curl -X POST localhost:8155/runs/approval-1/events/approve -d '"yes"'

While it waits, the run hibernates: no thread, no lease. Kill the script and start it
again: the draft is not written twice, and the wait goes on where it was.
"""

from __future__ import annotations

import os
import sys

import outlast

app = outlast.App(os.environ.get("OUTLAST_DATABASE_URL", "sqlite:///approval.db"))
REMIND_AFTER = float(os.environ.get("APPROVAL_REMIND_AFTER", "60"))
GIVE_UP_AFTER = float(os.environ.get("APPROVAL_GIVE_UP_AFTER", "3600"))


@app.step
def draft_email(to: str, topic: str) -> str:
    # An LLM call in a real agent; journaled, so a restart never drafts (or pays) twice.
    return f"Dear {to},\n\nan update on {topic}: all on track.\n\n-- your agent"


@app.step
def notify(message: str) -> None:
    print(message, file=sys.stderr)


@app.step
def send_email(to: str, body: str) -> str:
    return f"sent to {to} ({len(body)} chars)"


@app.workflow
def approval(ctx: outlast.Context, to: str, topic: str) -> str:
    body = draft_email(to, topic)
    notify(f"[{ctx.run_id}] draft ready; approve with: outlast send {ctx.run_id} approve '\"yes\"'")
    try:
        answer = ctx.wait_for("approve", timeout=REMIND_AFTER)
    except outlast.Timeout:
        notify(f"[{ctx.run_id}] reminder: the draft still waits for your approval")
        try:
            answer = ctx.wait_for("approve", timeout=GIVE_UP_AFTER)
        except outlast.Timeout:
            return "discarded: no answer"
    if answer in ("yes", True):
        return send_email(to, body)
    return f"discarded: {answer!r}"


if __name__ == "__main__":
    run_id = sys.argv[1] if len(sys.argv) > 1 else "approval-1"
    print(app.run(approval, "ann@example.com", "Q3 launch", run_id=run_id))
