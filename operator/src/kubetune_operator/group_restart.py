"""A multi-node attempt that fails together restarts together (pure).

The pods of a multi-node Job rendezvous statically: once one fails, the others
of its attempt cannot go on (they hang in a collective, or wait to be ended:
`kubetune_trainer.peers`). The operator evicts them: an eviction is a
disruption (`DisruptionTarget`), which the Job's pod failure policy ignores, so
the attempt costs `backoffLimit` one retry, for the pod that failed, and the Job
starts the whole group again from the newest checkpoint every node committed.

Which pods belong to the failed attempt: those that were live when the failure
happened. Their replacements, created afterwards, are the next attempt and are
left alone. Each failure is acted on once, and the peers ended for it are not
failures of their own (`handled` holds both), so a replacement created within
the same second as a failure (timestamps have seconds) is never taken for a peer.
"""

from __future__ import annotations

from dataclasses import dataclass

INDEX = "batch.kubernetes.io/job-completion-index"
TRAINER = "trainer"


@dataclass(frozen=True)
class FailedAttempt:
    failed: dict  # the pod that failed first
    peers: list[str]  # names of the live pods of its attempt, to end
    handled: frozenset[str]  # uids of the failed pods acted on and of the peers ended, these included


def index_of(pod: dict) -> str:
    return (pod["metadata"].get("annotations") or {}).get(INDEX, "0")


def _failed_at(pod: dict) -> str:
    """When the pod failed (RFC 3339, seconds), as its trainer container says, else
    as its last condition change; "" when nothing says (every live pod is then a peer)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("finishedAt"):
            return terminated["finishedAt"]
    times = [c.get("lastTransitionTime") or "" for c in (pod.get("status") or {}).get("conditions") or []]
    return max(times, default="")


def _live(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in (None, "Pending", "Running") and not pod["metadata"].get("deletionTimestamp")


def failed_attempt(pods: list[dict], nodes: int, handled: frozenset[str] = frozenset()) -> FailedAttempt | None:
    """The failed attempt whose live peers are to be ended, or None."""
    if nodes <= 1:
        return None
    fresh = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed" and p["metadata"]["uid"] not in handled]
    if not fresh:
        return None
    latest = max(_failed_at(p) for p in fresh)
    peers = [p for p in pods if _live(p) and (not latest or p["metadata"].get("creationTimestamp", "") <= latest)]
    first = min(fresh, key=_failed_at)
    uids = {p["metadata"]["uid"] for p in fresh + peers}
    return FailedAttempt(failed=first, peers=sorted(p["metadata"]["name"] for p in peers), handled=handled | uids)


def describe(attempt: FailedAttempt, nodes: int) -> str:
    """What the event on the FineTuneJob says."""
    pod = attempt.failed
    term = {}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER:
            term = (status.get("state") or {}).get("terminated") or {}
    how = f"exit code {term['exitCode']} ({term.get('reason', 'Error')})" if "exitCode" in term else (pod.get("status") or {}).get("reason", "failed")
    ended = f"ending the rest of its attempt ({', '.join(attempt.peers)})" if attempt.peers else "no other pod of its attempt is left"
    return (f"trainer pod {pod['metadata']['name']} (node {index_of(pod)}) failed: {how}; {ended}; all {nodes} nodes "
            "restart from the newest checkpoint every node committed")
