"""AWS Elastic Load Balancing v2 target groups (ALB, NLB, GWLB) as a load balancer lever.

A backend is a target group (its name or ARN); a server is a target id (instance id, IP address
or Lambda ARN), optionally with ``:port`` (``i-0abc:5080``, ``10.0.1.5:5060``, ``[fd00::5]:5060``)
when it is not the group's own port. READY registers the target; DRAIN and MAINT deregister it:
ELB has no maintenance state, and deregistration is how it drains (the target shows "draining"
until the group's deregistration delay ends, then disappears).

ELB does not report a target's current sessions: :attr:`ServerStatus.current_sessions` is 1 while
a target is draining (sessions may remain) and 0 otherwise, and :meth:`AwsTargetGroup.wait_drained`
waits until the target has left the group or is no longer draining. A target ELB does not list
reads as MAINT ("unused (not registered)"): a database failover's writer group usually holds only
the primary, so the candidate is registered for the first time when it is promoted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from siprec_backup.cloud.aws import AwsCredentials, aws_client, call
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.errors import CONFIGURATION, CloudLoadBalancerError, DrainTimeoutError
from siprec_backup.traffic.base import (
    DOWN,
    DRAIN,
    MAINT,
    UNKNOWN,
    UP,
    UP_TRANSITIONAL,
    LoadBalancer,
    ServerState,
    ServerStatus,
)

SERVICE = "elbv2"

#: ELB target health states and their normalised form.
HEALTH_STATES = {
    "healthy": UP,
    "initial": UP_TRANSITIONAL,
    "unhealthy": DOWN,
    "unhealthy.draining": DRAIN,
    "unused": MAINT,
    "draining": DRAIN,
    "unavailable": UNKNOWN,
}


@dataclass(frozen=True)
class TargetGroup:
    """One target group as ELB describes it; ``label`` is how the lever's caller named it."""

    label: str
    name: str
    arn: str
    port: int | None
    target_type: str


@dataclass(frozen=True)
class Target:
    """A target id and its port (None: the target group's port)."""

    id: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """``"i-0abc"``, ``"i-0abc:5080"``, ``"10.0.1.5:5060"``, ``"[fd00::5]:5060"``,
        ``"fd00::5"``, or a Lambda function ARN (never split)."""
        text = text.strip()
        if not text:
            raise _config("empty target id")
        if text.startswith("arn:"):
            return cls(text)
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise _config(f"bad target {text!r}: use [v6]:port")
            return cls(host, _port(text, rest[1:]) if rest else None)
        if text.count(":") == 1:
            host, _, port = text.partition(":")
            return cls(host, _port(text, port))
        return cls(text)

    def label(self, default_port: int | None) -> str:
        """``id`` when on the group's port, else ``id:port`` (``[v6]:port``)."""
        if self.port is None or self.port == default_port:
            return self.id
        host = f"[{self.id}]" if ":" in self.id else self.id
        return f"{host}:{self.port}"

    def api(self) -> dict[str, Any]:
        """The ``Targets`` entry of RegisterTargets / DeregisterTargets."""
        entry: dict[str, Any] = {"Id": self.id}
        if self.port is not None:
            entry["Port"] = self.port
        return entry


def _config(message: str) -> CloudLoadBalancerError:
    return CloudLoadBalancerError(message, provider="aws", service=SERVICE, code=CONFIGURATION)


def _port(text: str, port: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _config(f"bad port in target {text!r}")
    return int(port)


class AwsTargetGroup(LoadBalancer):
    """ELBv2 target groups as one lever: ``target_groups`` are names or ARNs (empty: every
    target group of the account and region, or of ``load_balancer_arn``).

    >>> lb = AwsTargetGroup(["sip-edge"], credentials=AwsCredentials(region="eu-west-1"))
    >>> lb.set_state("sip-edge", "i-0abc", ServerState.DRAIN)
    """

    def __init__(
        self,
        target_groups: Sequence[str] = (),
        *,
        credentials: AwsCredentials | None = None,
        client: Any = None,
        load_balancer_arn: str = "",
        retry: RetryPolicy | None = None,
    ) -> None:
        self.credentials = credentials or AwsCredentials()
        self.target_groups = tuple(target_groups)
        self.load_balancer_arn = load_balancer_arn
        self.retry = retry or RetryPolicy()
        self._client = client
        self._groups: list[TargetGroup] | None = None

    def __repr__(self) -> str:
        return f"AwsTargetGroup({list(self.target_groups)!r}, {self.credentials.describe()})"

    @property
    def client(self) -> Any:
        """The elbv2 client (built on first use)."""
        if self._client is None:
            self._client = aws_client(
                SERVICE, self.credentials, family=CloudLoadBalancerError, retry=self.retry
            )
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        method = getattr(self.client, operation)
        return call(
            method, service=SERVICE, family=CloudLoadBalancerError, retry=self.retry, **kwargs
        )

    # --- target groups ---------------------------------------------------------------------

    def describe(self) -> str:
        """``AWS ELBv2 target groups sip-edge, sip-core (region us-east-1)``."""
        names = ", ".join(self.target_groups) or "(all)"
        return f"AWS ELBv2 target groups {names} (region {self.credentials.region})"

    def groups(self) -> list[TargetGroup]:
        """The configured target groups, looked up once (names resolved to ARNs)."""
        if self._groups is None:
            self._groups = self._describe_groups()
        return self._groups

    def _describe_groups(self) -> list[TargetGroup]:
        arns = [g for g in self.target_groups if g.startswith("arn:")]
        names = [g for g in self.target_groups if not g.startswith("arn:")]
        found: list[dict[str, Any]] = []
        if not self.target_groups:
            found += self._all_groups()
        if arns:
            found += self._call("describe_target_groups", TargetGroupArns=arns)["TargetGroups"]
        if names:
            found += self._call("describe_target_groups", Names=names)["TargetGroups"]
        by_key: dict[str, dict[str, Any]] = {}
        for group in found:
            by_key[group["TargetGroupArn"]] = group
            by_key[group["TargetGroupName"]] = group
        labels = self.target_groups or tuple(g["TargetGroupName"] for g in found)
        result = []
        for label in labels:
            match = by_key.get(label)
            if match is None:
                raise _config(f"no target group {label!r} in {self.credentials.region}")
            port = match.get("Port")
            result.append(
                TargetGroup(
                    label=label,
                    name=match["TargetGroupName"],
                    arn=match["TargetGroupArn"],
                    port=int(port) if port is not None else None,
                    target_type=str(match.get("TargetType", "instance")),
                )
            )
        return result

    def _all_groups(self) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if self.load_balancer_arn:
            kwargs["LoadBalancerArn"] = self.load_balancer_arn
        groups: list[dict[str, Any]] = []
        while True:
            page = self._call("describe_target_groups", **kwargs)
            groups += page["TargetGroups"]
            marker = page.get("NextMarker")
            if not marker:
                return groups
            kwargs["Marker"] = marker

    def group(self, backend: str) -> TargetGroup:
        """The configured target group named ``backend`` (its label, name or ARN)."""
        for group in self.groups():
            if backend in (group.label, group.name, group.arn):
                return group
        known = ", ".join(g.label for g in self.groups()) or "none"
        raise _config(f"{self.describe()}: no backend {backend!r} (backends: {known})")

    # --- reading ---------------------------------------------------------------------------

    def check(self) -> str:
        """DescribeTargetGroups and DescribeTargetHealth: what answered and how many targets."""
        found = self.servers()
        endpoint = self.credentials.endpoint_url or "AWS"
        return (
            f"ELBv2 at {endpoint} (region {self.credentials.region}): {len(self.groups())} target"
            f" group(s), {len(found)} target(s)"
        )

    def servers(self) -> list[ServerStatus]:
        """Every target of every configured target group, from DescribeTargetHealth."""
        found: list[ServerStatus] = []
        for group in self.groups():
            found += self._health(group)
        return found

    def _health(self, group: TargetGroup) -> list[ServerStatus]:
        answer = self._call("describe_target_health", TargetGroupArn=group.arn)
        statuses = []
        for entry in answer.get("TargetHealthDescriptions", []):
            raw = entry.get("Target", {})
            port = raw.get("Port")
            target = Target(str(raw.get("Id", "")), int(port) if port is not None else group.port)
            health = entry.get("TargetHealth", {})
            statuses.append(self._status(group, target, health))
        return statuses

    def _status(self, group: TargetGroup, target: Target, health: dict[str, Any]) -> ServerStatus:
        state = str(health.get("State", "unavailable"))
        reason = str(health.get("Reason", ""))
        normal = HEALTH_STATES.get(state, UNKNOWN)
        host = f"[{target.id}]" if ":" in target.id else target.id
        return ServerStatus(
            backend=group.label,
            server=target.label(group.port),
            address=f"{host}:{target.port}" if target.port is not None else target.id,
            status=f"{state} ({reason})" if reason else state,
            state=normal,
            current_sessions=1 if normal == DRAIN else 0,
            weight=1,
        )

    def _target(self, group: TargetGroup, server: str) -> Target:
        target = Target.parse(server)
        return Target(target.id, target.port if target.port is not None else group.port)

    def server(self, backend: str, server: str) -> ServerStatus:
        """One target (``id`` or ``id:port``); one that ELB does not list reads as MAINT."""
        group = self.group(backend)
        target = self._target(group, server)
        for status in self._health(group):
            parsed = self._target(group, status.server)
            if parsed == target:
                return status
        return ServerStatus(
            backend=group.label,
            server=target.label(group.port),
            address=target.id,
            status="unused (not registered)",
            state=MAINT,
            current_sessions=0,
            weight=1,
        )

    # --- levers ----------------------------------------------------------------------------

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        """READY registers the target; DRAIN and MAINT deregister it (ELB drains it)."""
        group = self.group(backend)
        entry = Target.parse(server).api()
        if state == ServerState.READY:
            self._call("register_targets", TargetGroupArn=group.arn, Targets=[entry])
        else:
            self._call("deregister_targets", TargetGroupArn=group.arn, Targets=[entry])

    def wait_drained(
        self, backend: str, server: str, *, deadline_s: float, poll_s: float = 0.2
    ) -> float:
        """Poll until the target has left the group or is no longer draining; return the
        seconds waited, DrainTimeoutError once ``deadline_s`` seconds have passed."""
        start = time.monotonic()
        while True:
            status = self.server(backend, server)
            elapsed = time.monotonic() - start
            if status.state != DRAIN:
                return elapsed
            if elapsed >= deadline_s:
                raise DrainTimeoutError(
                    f"{self.describe()}: {status.name} is still {status.status} after"
                    f" {deadline_s:g} s (the target group's deregistration delay)"
                )
            time.sleep(max(0.0, min(poll_s, deadline_s - elapsed)))
