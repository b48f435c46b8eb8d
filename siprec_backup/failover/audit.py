"""The audit trail of one failover, switchover or cutover run: every step with its inputs, its
result, its duration and the positions seen, the rollbacks, the outcome and, when the run stopped
half-way, the exact manual next step. Pure (no Prefect): the flows fill it in and publish it as an
artifact; :meth:`journal` is the small summary kept between runs so that the next run can tell
that this one stopped half-way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal[
    "running",
    "dry-run",
    "refused",
    "completed",
    "rolled-back",
    "stopped-after-promotion",
]
#: Outcomes after which the cluster needs an operator before the next run.
HALF_DONE: tuple[str, ...] = ("running", "stopped-after-promotion")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class StepRecord:
    """One step as it ran (``status``: done, failed, skipped, rolled-back, kept)."""

    key: str
    target: str
    inputs: dict[str, Any]
    status: str = "running"
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: str = field(default_factory=utc_now)
    seconds: float = 0.0
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def finish(self, status: str, result: dict[str, Any] | None = None, error: str = "") -> None:
        self.status = status
        self.result = result or {}
        self.error = error or None
        self.seconds = round(time.monotonic() - self._t0, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "target": self.target,
            "inputs": self.inputs,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "started": self.started,
            "seconds": self.seconds,
        }


@dataclass
class FailoverAudit:
    """Everything one run did. ``actor`` names the flow run (or the CLI user)."""

    cluster: str
    mode: str
    actor: str
    reason: str
    run_id: str = ""
    started: str = field(default_factory=utc_now)
    outcome: Outcome = "running"
    plan: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    rollbacks: list[str] = field(default_factory=list)
    promoted: str | None = None
    error: str | None = None
    next_step: str | None = None
    approval: dict[str, Any] | None = None
    finished: str | None = None
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def begin(self, key: str, target: str, **inputs: Any) -> StepRecord:
        record = StepRecord(key, target, inputs)
        self.steps.append(record)
        return record

    def step(self, key: str) -> StepRecord | None:
        """The last record of step ``key``."""
        return next((s for s in reversed(self.steps) if s.key == key), None)

    @property
    def last_done(self) -> str | None:
        done = [s.key for s in self.steps if s.status == "done"]
        return done[-1] if done else None

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def end(self, outcome: Outcome, *, error: str = "", next_step: str = "") -> None:
        self.outcome = outcome
        self.error = error or None
        self.next_step = next_step or None
        self.finished = utc_now()

    def journal(self) -> dict[str, Any]:
        """The small summary kept between runs (fits a Prefect variable)."""
        return {
            "run_id": self.run_id,
            "actor": self.actor,
            "mode": self.mode,
            "started": self.started,
            "updated": utc_now(),
            "outcome": self.outcome,
            "old_primary": self.plan.get("old_primary"),
            "candidate": self.plan.get("candidate"),
            "promoted": self.promoted,
            "last_step": self.last_done,
            "next_step": self.next_step,
            "error": (self.error or "")[:500] or None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "mode": self.mode,
            "actor": self.actor,
            "reason": self.reason,
            "run_id": self.run_id,
            "started": self.started,
            "finished": self.finished,
            "seconds": self.seconds,
            "outcome": self.outcome,
            "promoted": self.promoted,
            "error": self.error,
            "next_step": self.next_step,
            "approval": self.approval,
            "plan": self.plan,
            "steps": [s.to_dict() for s in self.steps],
            "rollbacks": self.rollbacks,
        }

    def to_markdown(self) -> str:
        """The report the run publishes (the Prefect UI's artifact)."""
        head = {
            "completed": "completed",
            "rolled-back": "failed and was rolled back: nothing changed",
            "stopped-after-promotion": "STOPPED after promotion: finish by hand",
            "refused": "refused before any change",
            "dry-run": "dry run: nothing changed",
            "running": "still running",
        }[self.outcome]
        lines = [
            f"# {self.mode.title()} of `{self.cluster}`: {head}",
            "",
            f"- Run: {self.actor}",
            f"- Reason: {self.reason}",
            f"- Started {self.started}, finished {self.finished or '-'} ({self.seconds} s)",
        ]
        if self.promoted:
            lines.append(f"- Promoted: **{self.promoted}**")
        loss = self.plan.get("loss")
        if loss:
            exact = "" if loss.get("exact") else " (lower bound)"
            lines.append(f"- Data loss measured: {loss['amount']} {loss['unit']}{exact}")
        if self.approval:
            lines.append(f"- Approval: {self.approval}")
        if self.error:
            lines.append(f"- Error: {self.error}")
        if self.next_step:
            lines += ["", f"**Manual next step:** {self.next_step}"]
        lines += [
            "",
            "| # | step | target | status | seconds | result |",
            "|---|---|---|---|---|---|",
        ]
        for i, s in enumerate(self.steps, 1):
            result = s.error or ", ".join(f"{k}={v}" for k, v in s.result.items())
            lines.append(
                f"| {i} | {s.key} | {s.target} | {s.status} | {s.seconds} | "
                f"{result.replace('|', '/')} |"
            )
        if self.rollbacks:
            lines += ["", "## Rolled back (in this order)", ""]
            lines += [f"- {r}" for r in self.rollbacks]
        return "\n".join(lines) + "\n"
