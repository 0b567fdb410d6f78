"""Warnings about a valid spec that may not work on the cluster it goes to.

Validation refuses what can never work (`spec.py`, `kubetune_contract.rules`).
What works on some clusters and not on others is not an error: a multi-node job
without a queue is scheduled pod by pod, a `pvc://` location is shared by every
node only when its claim is ReadWriteMany, CPU-only nodes train big models far
too slowly to be useful. `kubetune validate` prints these and exits 0; the
operator adds them to the `Valid` condition's message, so `kubectl describe`
shows them too.
"""

from __future__ import annotations

from .spec import FineTuneJobSpec


def _locations(spec: FineTuneJobSpec) -> list[tuple[str, str | None]]:
    return [("spec.model.uri", spec.model.uri), ("spec.checkpoint.uri", spec.checkpoint.uri), ("spec.output.uri", spec.output.uri)]


def _multinode(spec: FineTuneJobSpec) -> list[str]:
    nodes = spec.distributed.nodes
    out = []
    if spec.queue_name is None:
        out.append(f"spec.distributed.nodes {nodes} without spec.queueName: the pods are scheduled one by one, so a "
                   "partly placed group holds its nodes while it waits for the rest; admit it through a Kueue "
                   "LocalQueue to start all of them together or none")
    if spec.resources.gpus_per_node == 0:
        out.append(f"spec.distributed.nodes {nodes} with spec.resources.gpusPerNode 0: one process per pod on CPU "
                   "(gloo); fine for tiny models, far too slow for real ones")
    for field, uri in _locations(spec):
        if uri and uri.startswith("pvc://"):
            out.append(f"{field} {uri} with spec.distributed.nodes {nodes}: every node mounts the claim, which must "
                       "be ReadWriteMany (s3:// needs no shared volume)")
    return out


def _offload(spec: FineTuneJobSpec) -> list[str]:
    ds = spec.resolved_deepspeed
    if ds is None or spec.resources.gpus_per_node > 0 or not (ds.offload_optimizer or ds.offload_params):
        return []
    return ["spec.distributed.deepspeed offloadOptimizer/offloadParams with spec.resources.gpusPerNode 0: offloading "
            "moves state from GPU to CPU memory; on CPU nodes it only adds copies"]


def warnings(spec: FineTuneJobSpec) -> list[str]:
    """What may not work as asked, each naming its field(s)."""
    return (_multinode(spec) if spec.distributed.nodes > 1 else []) + _offload(spec)
