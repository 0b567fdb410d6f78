"""Pure: what a job's serving and export look like from what the cluster shows.

- `serving_verdict`: (ready, reason, message) of the Serving condition, from the
  vLLM Deployment, its pods (vLLM's own crash, with its last log line) and, for
  a pool member, whether the Deployment serves this job's adapter yet;
- `export_verdict`: the Exported condition from the trainer's report (a format
  that failed is named with its reason; the training result stands).
"""

from __future__ import annotations

import re

from ..api.status import ConditionType as C
from ..api.status import Reason as R
from ..builders.serving_plan import PREVIOUS_MEMBERS_ANNOTATION, members_of
from .conditions import clip, set_condition
from .serving_gate import gate_conditions
from .tracking import tracking_condition

VLLM_CONTAINER = "vllm"
# The line of a crash log that says what went wrong (a traceback ends with it;
# vLLM may log shutdown noise after it).
_ERROR_LINE = re.compile(r"(Error|Exception|error:|Killed|out of memory)", re.IGNORECASE)


def last_log_line(message: str) -> str:
    """The line of vLLM's last log lines (its termination message) that says why it stopped."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return (errors or lines or [""])[-1]


def _vllm_status(pod: dict) -> dict | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == VLLM_CONTAINER:
            return status
    return None


def vllm_failure(pods: list[dict]) -> str | None:
    """Why vLLM does not come up, from the newest pod whose vLLM exited with an
    error (crash loop, OOM, a bad adapter): its reason, exit code and last log line."""
    failures = []
    for pod in pods:
        status = _vllm_status(pod) or {}
        for state in (status.get("state") or {}, status.get("lastState") or {}):
            term = state.get("terminated")
            if term and (term.get("exitCode") or 0) != 0:
                waiting = ((status.get("state") or {}).get("waiting") or {}).get("reason")
                failures.append((term.get("finishedAt") or "", term, waiting, status.get("restartCount") or 0))
                break
    if not failures:
        return None
    _, term, waiting, restarts = max(failures, key=lambda f: f[0])
    how = term.get("reason") or "Error"
    if waiting == "CrashLoopBackOff":
        how = f"CrashLoopBackOff after {restarts} restart{'s' if restarts != 1 else ''}, last {how}"
    line = last_log_line(term.get("message") or "")
    return clip(f"vLLM exited with code {term.get('exitCode')} ({how})" + (f": {line}" if line else ""))


def _available(deployment: dict) -> tuple[bool, int, int]:
    status = deployment.get("status") or {}
    want = (deployment.get("spec") or {}).get("replicas", 1)
    available = status.get("availableReplicas") or 0
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    return conditions.get("Available", {}).get("status") == "True" and available >= min(want, 1), available, want


def available(deployment: dict | None) -> bool:
    """At least one replica answers (the Deployment's Available condition)."""
    return deployment is not None and _available(deployment)[0]


def rolled_out(deployment: dict) -> bool:
    """Every replica runs the current template (so its members are all served)."""
    status = deployment.get("status") or {}
    want = (deployment.get("spec") or {}).get("replicas", 1)
    generation = deployment.get("metadata", {}).get("generation")
    current = generation is None or (status.get("observedGeneration") or 0) >= generation
    return current and (status.get("updatedReplicas") or 0) >= want and (status.get("replicas") or 0) <= want


def serves(deployment: dict, member: str) -> bool:
    """Whether a pool Deployment answers for `member` now: it is in the current
    template once the rollout completed, or was in the template rolling out from."""
    if member not in members_of(deployment):
        return False
    return rolled_out(deployment) or member in members_of(deployment, PREVIOUS_MEMBERS_ANNOTATION)


def _not_progressing(deployment: dict) -> str | None:
    """Why the Deployment's controller gave up (progress deadline, a replica it cannot create)."""
    conditions = {c.get("type"): c for c in (deployment.get("status") or {}).get("conditions") or []}
    progressing, failure = conditions.get("Progressing", {}), conditions.get("ReplicaFailure", {})
    if progressing.get("status") == "False" or failure.get("status") == "True":
        return progressing.get("message") or failure.get("message") or "the Deployment is not progressing"
    return None


def serving_verdict(deployment: dict | None, pods: list[dict], was_ready: bool,
                    member: str | None = None, refusal: str | None = None) -> tuple[bool, str, str]:
    """(ready, reason, message) of the Serving condition. `member`: the model
    name a pool Deployment must serve for this job; `refusal`: why the job
    cannot be served at all (a pool it disagrees with)."""
    if refusal:
        return False, R.SERVING_REFUSED, clip(refusal)
    if deployment is None:
        return False, R.SERVING_PENDING, "creating the vLLM Deployment"
    available, count, want = _available(deployment)
    if available and member is None and not rolled_out(deployment):
        # Answering still, but with what spec.serving was (mode, image, extraArgs...): a
        # user who changed it waits for ServingReady, not merely for Serving=True.
        previous = f"{count}/{want} vLLM replicas available with the previous spec.serving; "
        stuck = vllm_failure(pods) or _not_progressing(deployment)
        if stuck:
            return True, R.SERVING_ROLLING_OUT, clip(f"{previous}the changed one does not come up: {stuck}")
        updated = (deployment.get("status") or {}).get("updatedReplicas") or 0
        return True, R.SERVING_ROLLING_OUT, f"{previous}the changed one is rolling out ({min(updated, want)}/{want} updated)"
    if available and (member is None or serves(deployment, member)):
        return True, R.SERVING_READY, f"{count}/{want} vLLM replicas available"
    crashed = vllm_failure(pods)
    if crashed:
        return False, R.SERVING_FAILED, crashed
    stuck = _not_progressing(deployment)
    if stuck:
        return False, R.SERVING_FAILED, clip(stuck)
    if was_ready:
        return False, R.SERVING_FAILED, f"vLLM became unavailable: {count}/{want} replicas available"
    if member is not None and available:
        return False, R.SERVING_PENDING, f"the pool's vLLM is rolling out with this job's adapter ({member})"
    return False, R.SERVING_PENDING, f"waiting for vLLM: {count}/{want} replicas available"


def export_verdict(report: dict) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Exported condition from the trainer's
    report; None when the run ended before exporting."""
    failures = report.get("exportFailures") or {}
    produced = [key.removesuffix("Uri") for key in report.get("output") or {} if key != "reportUri"]
    if isinstance(failures, dict) and failures:
        detail = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        done = f" (exported: {', '.join(produced)})" if produced else ""
        return "False", R.EXPORT_FAILED, clip(f"{detail}{done}")
    if produced:
        return "True", R.EXPORTED, f"exported {', '.join(produced)}"
    return None


def outcome_conditions(serving_enabled: bool, phase: str, reason: str, report: dict | None) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of the conditions a training outcome adds:
    Exported once it succeeded; Serving=False for a job asked to serve whose training failed;
    Tracking once the trainer reported on its tracker (`tracking`)."""
    out = []
    if phase == "Succeeded" and report and (verdict := export_verdict(report)):
        out.append((C.EXPORTED, *verdict))
    if serving_enabled and phase == "Failed":
        out.append((C.SERVING, "False", R.NOT_SERVED, f"not served: training failed ({reason})"))
    if tracked := tracking_condition(report):
        out.append(tracked)
    return out


def judge_serving(status: dict, current: dict, conditions: list[dict], obs, phase: str, now: str,
             generation: int | None) -> tuple[str, list[dict]]:
    """(phase, conditions) once serving is judged, `status["serving"]` set. The
    gate is judged before serving starts, and again when a re-evaluation
    brings other numbers (not when only the gate changes); a job no longer to
    be served (serving.enabled false, the gate now missed) says so in the
    Serving condition and status.serving."""
    serve = phase == "Succeeded" and obs.serving_enabled
    if serve and (current.get("phase") != "Serving" or status.get("evaluation") != current.get("evaluation")):
        serve, gated = gate_conditions(obs.serving_gate, status.get("evaluation"))
        for type_, *verdict in gated:
            conditions = set_condition(conditions, type_, *verdict, now, generation)
    if serve:
        # Once Serving, losing availability is a failure, not "pending" again.
        was_ready = current.get("phase") == "Serving" or bool((current.get("serving") or {}).get("ready"))
        ready, reason, message = serving_verdict(obs.deployment, obs.serving_pods, was_ready, member=obs.serving_member,
                                                 refusal=obs.serving_refusal)
        conditions = set_condition(conditions, C.SERVING, "True" if ready else "False", reason, message, now, generation)
        status["serving"] = {**(current.get("serving") or {}), "ready": ready}
        if ready or (current.get("phase") == "Serving" and reason == R.SERVING_FAILED):
            # Once serving, a failing Deployment shows in the Serving condition
            # and serving.ready; the phase keeps saying what the job reached.
            phase = "Serving"
    elif phase == "Succeeded" and current.get("serving"):
        said = next((c for c in conditions if c.get("type") == C.SERVING and c.get("reason") == R.SERVING_DISABLED), None)
        if not obs.serving_enabled and said is None:  # said once, while status.serving still names the pool (a missed gate set its own)
            conditions = set_condition(conditions, C.SERVING, "False", R.SERVING_DISABLED, not_served_message(current), now, generation)
        status["serving"] = {"ready": False}  # no endpoint serves it any more
    return phase, conditions


def not_served_message(current: dict) -> str:
    pool = (current.get("serving") or {}).get("pool")
    if pool:
        return f"serving.enabled is false: taken out of serving pool {pool} (its other members are served on)"
    return "serving.enabled is false: not served; its vLLM Deployment and Service are removed"
