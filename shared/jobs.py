"""Jobs: the long steps (smoke test, rollout, rollback) that a trigger hands to the work queue.

Functions stay short: a trigger records its decision in the ledger and enqueues a job; the queue trigger runs
it. A job is a small JSON message, safe to run twice (the engine re-reads the ledger before it acts), and
carries who asked and why, so the ledger can say.

Pure. No I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

from shared import errors

Kind = Literal["test", "rollout", "rollback"]
KINDS = ("test", "rollout", "rollback")


@dataclass(frozen=True, slots=True)
class Job:
    kind: Kind
    release_id: str = ""
    environment: str = ""
    by: str = "shipbot"
    reason: str = ""
    force: bool = False
    automatic: bool = True  # a rule asked (not a person): the no-downgrade/hold/rolled-back rules apply
    app: str = ""           # the application; empty: the one today's app settings describe (a job from before)

    def to_message(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_message(cls, text: str | bytes) -> Job:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
                raise ValueError("not a job")
            return cls(**{k: doc[k] for k in doc if k in cls.__dataclass_fields__})
        except (ValueError, TypeError) as e:
            raise errors.InvalidEvent(f"job message is not a ShipBot job: {e}") from None


def test(release_id: str) -> Job:
    return Job("test", release_id=release_id)


def rollout(environment: str, release_id: str, *, by: str = "shipbot", reason: str = "", force: bool = False,
            automatic: bool = True) -> Job:
    return Job("rollout", release_id=release_id, environment=environment, by=by, reason=reason, force=force,
               automatic=automatic)


def rollback(environment: str, to: str, *, by: str, reason: str) -> Job:
    """Back to the release `to` (the environment's previous one when the job was asked for)."""
    return Job("rollback", release_id=to, environment=environment, by=by, reason=reason, automatic=False)
