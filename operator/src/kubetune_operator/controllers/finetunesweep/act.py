"""What a sweep's pass does to its trials: start new ones while there is room,
stop the clearly worse ones, carry the sweep's suspend to them, and serve the
best one when asked to."""

from __future__ import annotations

from ...api.manifest import parse_job
from ...api.status import STOP_ANNOTATION
from ...builders.trial import build_trial
from ...sweeps import trials as st
from .progress import too_many_failures

# A trial created but not in the cache yet (its watch event is in flight): come
# back after this instead of suggesting from a study that lacks it.
CACHE_LAG_SECONDS = 0.5


def start_trials(ctl, p, trials: list[st.Trial]) -> float | None:
    """Create trials up to `parallelism`, until `maxTrials`; returns when to come
    back if the cache lags behind what this process created."""
    from ...sweeps import study  # Optuna: loaded by the first sweep that starts a trial

    spec = p.sweep.spec
    room = spec.parallelism - sum(t.state == "running" for t in trials)
    while room > 0 and len(trials) < spec.max_trials and not spec.suspend and not too_many_failures(spec, trials):
        number = max((t.number for t in trials), default=-1) + 1
        values, attrs = study.suggest(study.rebuild(spec, trials, number), spec)
        doc = build_trial(p.sweep, number, values, attrs)
        parsed = parse_job(doc)
        if parsed.job is None:  # the template and these values make no valid job
            ctl.invalid(p, number, doc, values, parsed.problems)
            trials.append(st.Trial(number, values, attrs, "failed"))
            continue
        stored, created = ctl.kube.create_if_absent(doc)
        if not created:
            return CACHE_LAG_SECONDS
        ctl.event(p, "Normal", "TrialStarted", f"trial {number} ({stored['metadata']['name']}): {_values(values)}")
        trials.append(st.Trial(number, values, attrs, "running"))
        room -= 1
    return None


def stop_worse_trials(ctl, p, trials: list[st.Trial], bodies: dict[int, dict]) -> None:
    """Ask the median pruner; a pruned trial's FineTuneJob is told to stop (it checkpoints, then ends Stopped)."""
    from ...sweeps import study  # Optuna, as in start_trials

    for number in study.to_prune(p.sweep.spec, trials):
        body = bodies[number]
        if STOP_ANNOTATION in (body["metadata"].get("annotations") or {}):
            continue  # asked already
        trial = next(t for t in trials if t.number == number)
        step, value = max(trial.curve.items())
        message = (f"Pruned: {p.sweep.spec.optimize.metric} {value:.4g} at step {step} is worse than the median of "
                   f"earlier trials at that step")
        ctl.kube.merge_patch("FineTuneJob", p.key[0], body["metadata"]["name"], {"metadata": {"annotations": {STOP_ANNOTATION: message}}})
        ctl.event(p, "Normal", "TrialPruned", f"trial {number} ({body['metadata']['name']}): {message.removeprefix('Pruned: ')}")


def carry_suspend(ctl, p, bodies: dict[int, dict]) -> None:
    """Suspending a sweep suspends its unfinished trials; resuming resumes them."""
    want = p.sweep.spec.suspend
    for body in bodies.values():
        finished = (body.get("status") or {}).get("phase") in ("Succeeded", "Serving", "Failed", "Stopped")
        if not finished and bool((body.get("spec") or {}).get("suspend")) != want:
            ctl.kube.merge_patch("FineTuneJob", p.key[0], body["metadata"]["name"], {"spec": {"suspend": want}})


def promote(ctl, p, best: dict | None, bodies: dict[int, dict]) -> str | None:
    """Serve the best trial (the template's serving settings, enabled); returns its name."""
    if not (p.sweep.spec.promote and best):
        return None
    body = bodies[best["number"]]
    if not ((body.get("spec") or {}).get("serving") or {}).get("enabled"):
        serving = {**p.sweep.spec.template.serving.to_manifest(), "enabled": True}
        ctl.kube.merge_patch("FineTuneJob", p.key[0], best["name"], {"spec": {"serving": serving}})
        ctl.event(p, "Normal", "Promoted", f"serving the best trial {best['name']} ({p.sweep.spec.optimize.metric} {best['objective']:.4g})")
    return best["name"]


def _values(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())

