"""The admin policy (`KubetunePolicy`, cluster-scoped): what a FineTuneJob's
author may name beyond their own namespace's objects.

A FineTuneJob's author is trusted with their namespace only. Whatever a spec
can point outside it (where credentials are sent, which storage prefixes are
read and written, which nodes and priorities pods get, whether a model's own
code runs) is allowed only where this policy says so. Each knob is declared
once here, as a `Knob`: its Python check (the operator before it creates
anything, and `kubetune validate --policy`) and its CEL (the API server, through
the ValidatingAdmissionPolicy `admission_policy` generates) refuse the same
specs, naming the field and the knob. Secret labels are the one knob the API
server cannot check (CEL sees no other object): the operator does
(`controllers/finetunejob/secrets`).

The chart renders one `KubetunePolicy` from its `policy` values (with the
operator's default bucket and S3 endpoint added) and gives the operator the
same spec as `KUBETUNE_POLICY`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Literal
from urllib.parse import urlsplit

from pydantic import Field

from kubetune_contract.base import ApiModel

from .errors import Problem
from .job import GROUP, VERSION, ObjectMeta

POLICY_KIND = "KubetunePolicy"
POLICY_PLURAL = "kubetunepolicies"
POLICY_SINGULAR = "kubetunepolicy"
POLICY_SHORT_NAMES = ["ktpolicy"]
USABLE_LABEL = "kubetune.io/usable=true"
NAMESPACE_PLACEHOLDER = "{namespace}"
# W&B's own host: where an online run without tracking.uri sends its key.
WANDB_HOST = "api.wandb.ai"


class AllowedToleration(ApiModel):
    """A toleration jobs may carry: the job's matches when its key and operator are
    the same and its value and effect are the same where this one sets them."""

    key: str | None = Field(None, max_length=317, description="Taint key; unset: the toleration without a key (operator Exists tolerates every taint).")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal, as the job's toleration says it.")
    value: str | None = Field(None, max_length=63, description="Taint value; unset: any.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect; unset: any.")


RootTemplate = Field(max_length=2048, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")


class PolicySpec(ApiModel):
    """What FineTuneJobs (and FineTuneSweeps' templates) may name. Empty lists allow nothing of their kind."""

    secret_label: str = Field(
        USABLE_LABEL, max_length=317, pattern=r"^([^=\s]+=[^=\s]*)?$",
        description="KEY=VALUE: a Secret a job references (S3 keys, hfToken, tracking token) must carry this label. Empty: any Secret of the namespace (not recommended: the Secret's value reaches the pod's environment).")
    trust_remote_code: bool = Field(False, description="Whether spec.model.trustRemoteCode may be true (a model's own Python code runs with the job's credentials).")
    allowed_s3_endpoints: list[str] = Field(
        default_factory=list, max_length=64,
        description="S3 endpoints credentials.s3.endpoint may name (exact URLs). The chart adds its defaultS3Endpoint.")
    allowed_tracking_hosts: list[str] = Field(
        default_factory=list, max_length=64,
        description=f"Hosts (host, or host:port) tracking.uri may name; {WANDB_HOST} here lets an online W&B run without tracking.uri send its key to W&B.")
    allowed_tolerations: list[AllowedToleration] = Field(default_factory=list, max_length=64, description="Tolerations resources.tolerations may list.")
    allowed_priority_classes: list[str] = Field(default_factory=list, max_length=64, description="PriorityClasses priorityClassName may name.")
    allowed_node_selectors: dict[str, list[str]] = Field(
        default_factory=dict, max_length=64,
        description="Node label keys resources.nodeSelector may use, each with the values allowed (an empty list: any value).")
    storage_roots: list[str] = Field(
        default_factory=list, max_length=64,
        description="s3:// prefixes a job may read and write (checkpoints, outputs, inputs); {namespace} stands for the job's namespace. The chart adds <defaultBucketUri>/{namespace}/.")
    read_only_roots: list[str] = Field(
        default_factory=list, max_length=64,
        description="s3:// prefixes a job may only read from (model, adapterFrom, datasets, evaluation.testUri, checkpoint.resumeFrom); {namespace} as above.")

    def roots(self, namespace: str, writable: bool) -> list[str]:
        templates = self.storage_roots if writable else [*self.storage_roots, *self.read_only_roots]
        return [_as_dir(t.replace(NAMESPACE_PLACEHOLDER, namespace)) for t in templates]


class KubetunePolicy(ApiModel):
    api_version: Literal["kubetune.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["KubetunePolicy"]
    metadata: ObjectMeta
    spec: PolicySpec = Field(default_factory=PolicySpec)


def default_policy(default_bucket_uri: str, default_s3_endpoint: str | None) -> PolicySpec:
    """What the chart's defaults render: the operator's own bucket (a prefix per
    namespace) and S3 endpoint, labelled Secrets, nothing else."""
    return PolicySpec(storage_roots=[f"{default_bucket_uri.rstrip('/')}/{NAMESPACE_PLACEHOLDER}/"],
                      allowed_s3_endpoints=[default_s3_endpoint] if default_s3_endpoint else [])


def parse_policy(text: str) -> PolicySpec:
    """A policy from JSON or YAML text: a KubetunePolicy object, or its spec alone."""
    import yaml

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid JSON or YAML: {exc}") from None
    if isinstance(data, dict) and data.get("kind") == POLICY_KIND:
        return KubetunePolicy.model_validate(data, by_alias=True, by_name=False).spec
    return PolicySpec.model_validate(data or {}, by_alias=True, by_name=False)


def _as_dir(prefix: str) -> str:
    return prefix if prefix.endswith("/") else prefix + "/"


def _under(uri: str, roots: list[str]) -> bool:
    segments = uri.removeprefix("s3://").split("/")
    if ".." in segments or "." in segments:
        return False  # a store that normalises keys would resolve it elsewhere
    return any((uri + "/").startswith(root) for root in roots)


def _host(uri: str) -> tuple[str, str]:
    """(host:port as written, host alone), as Kubernetes' CEL url() reads them."""
    netloc = urlsplit(uri).netloc.rpartition("@")[2]
    hostname = netloc[1:].partition("]")[0] if netloc.startswith("[") else netloc.partition(":")[0]
    return netloc, hostname


# --------------------------------------------------------------------------- the knobs


@dataclass(frozen=True)
class Knob:
    """One thing the policy decides about one spec field.

    `check(spec, policy, namespace)` -> [(path under spec, offending value)];
    `cel`: true when allowed, over `variables.spec` (the job's spec, or a
    sweep's template spec), `params.spec` (the policy) and the variables
    `admission_policy` declares (`roots`, `readRoots`); `value_cel` the
    offending value for the message."""

    knob: str  # the policy field that decides, camelCase
    field: str  # the spec field, as a message names it
    check: Callable[[object, PolicySpec, str], list[tuple[str, str]]]
    cel: str
    value_cel: str
    allowed: Callable[[PolicySpec, str], list[str]]  # what the knob allows, for the message

    def message(self, value: str, policy: PolicySpec, namespace: str) -> str:
        allowed = ", ".join(self.allowed(policy, namespace)) or "nothing"
        return (f"{value} is not allowed by the admin policy (KubetunePolicy {self.knob}: {allowed}); "
                "ask your cluster admin to allow it, or leave the field unset")


def _opt(path: str, default: str = "''") -> str:
    """CEL: the optional field at `path` under variables.spec, or `default`."""
    return "variables.spec" + "".join(f".?{part}" for part in path.split(".")) + f".orValue({default})"


def _list_cel(field: str) -> str:
    return f"params.spec.?{field}.orValue([])"


def _trust(spec, policy, ns):
    return [("model.trustRemoteCode", "true")] if spec.model.trust_remote_code and not policy.trust_remote_code else []


def _endpoint(spec, policy, ns):
    s3 = spec.credentials.s3
    if s3 and s3.endpoint and s3.endpoint not in policy.allowed_s3_endpoints:
        return [("credentials.s3.endpoint", s3.endpoint)]
    return []


def _tracking_host(spec, policy, ns):
    uri = spec.tracking.uri
    if uri:
        netloc, hostname = _host(uri)
        if netloc not in policy.allowed_tracking_hosts and hostname not in policy.allowed_tracking_hosts:
            return [("tracking.uri", uri)]
    return []


def _wandb_host(spec, policy, ns):
    t = spec.tracking
    sends_key = t.backend == "wandb" and t.mode == "online" and t.uri is None and spec.credentials.tracking is not None
    return [("tracking.backend", f"wandb online without tracking.uri (its key goes to {WANDB_HOST})")] \
        if sends_key and WANDB_HOST not in policy.allowed_tracking_hosts else []


def _priority(spec, policy, ns):
    name = spec.priority_class_name
    return [("priorityClassName", name)] if name and name not in policy.allowed_priority_classes else []


def _node_selector(spec, policy, ns):
    out = []
    for key, value in spec.resources.node_selector.items():
        allowed = policy.allowed_node_selectors.get(key)
        if allowed is None or (allowed and value not in allowed):
            out.append((f"resources.nodeSelector[{key}]", f"{key}={value}"))
    return out


def toleration_allowed(t, a: AllowedToleration) -> bool:
    return ((a.key or "") == (t.key or "") and a.operator == t.operator
            and (not a.value or a.value == (t.value or "")) and (not a.effect or a.effect == (t.effect or "")))


def _tolerations(spec, policy, ns):
    return [(f"resources.tolerations[{i}]", json.dumps(t.model_dump(by_alias=True, exclude_none=True), sort_keys=True))
            for i, t in enumerate(spec.resources.tolerations)
            if not any(toleration_allowed(t, a) for a in policy.allowed_tolerations)]


_TOLERATION_CEL = ("a.?key.orValue('') == t.?key.orValue('') && a.?operator.orValue('Equal') == t.?operator.orValue('Equal')"
                   " && (a.?value.orValue('') == '' || a.value == t.?value.orValue(''))"
                   " && (a.?effect.orValue('') == '' || a.effect == t.?effect.orValue(''))")
_UNDER_CEL = ("(!u.startsWith('s3://') || (!u.substring(5).split('/').exists(p, p == '..' || p == '.')"
              " && {roots}.exists(r, (u + '/').startsWith(r))))")


def _storage_knob(field: str, getter: Callable[[object], list[tuple[str, str]]], writable: bool) -> Knob:
    """Every s3:// URI at `field` stays under the namespace's roots (read-only roots too for inputs)."""

    def check(spec, policy, ns):
        roots = policy.roots(ns, writable)
        return [(path, uri) for path, uri in getter(spec) if uri.startswith("s3://") and not _under(uri, roots)]

    roots_var = "variables.roots" if writable else "variables.readRoots"
    base, _, leaf = field.partition("[].")
    if leaf:  # a list of objects with a URI each
        uris = f"{_opt(base, '[]')}.map(x, x.?{leaf}.orValue(''))"
        cel = f"{uris}.all(u, {_UNDER_CEL.format(roots=roots_var)})"
        value = f"{uris}.filter(u, !{_UNDER_CEL.format(roots=roots_var)}).join(', ')"
    else:
        cel = f"[{_opt(field)}].all(u, {_UNDER_CEL.format(roots=roots_var)})"
        value = _opt(field)
    knob = "storageRoots" if writable else "storageRoots/readOnlyRoots"
    return Knob(knob, field.replace("[].", "[*]."), check, cel, value,
                lambda policy, ns, w=writable: policy.roots(ns, w))


def _one(path: str, attr: Callable[[object], str | None]) -> Callable[[object], list[tuple[str, str]]]:
    return lambda spec: [(path, value) for value in [attr(spec)] if value]


def _adapter_uri(spec) -> str | None:
    source = spec.model.adapter_from
    return source if source and "://" in source else None


STORAGE_KNOBS = (
    _storage_knob("checkpoint.uri", _one("checkpoint.uri", lambda s: s.checkpoint.uri), writable=True),
    _storage_knob("output.uri", _one("output.uri", lambda s: s.output.uri), writable=True),
    _storage_knob("model.uri", _one("model.uri", lambda s: s.model.uri), writable=False),
    _storage_knob("model.adapterFrom", _one("model.adapterFrom", _adapter_uri), writable=False),
    _storage_knob("dataset.trainUri", _one("dataset.trainUri", lambda s: s.dataset.train_uri), writable=False),
    _storage_knob("dataset.evalUri", _one("dataset.evalUri", lambda s: s.dataset.eval_uri), writable=False),
    _storage_knob("dataset.sources[].uri",
                  lambda s: [(f"dataset.sources[{i}].uri", src.uri) for i, src in enumerate(s.dataset.sources or [])], writable=False),
    _storage_knob("evaluation.testUri", _one("evaluation.testUri", lambda s: s.evaluation.test_uri), writable=False),
    _storage_knob("checkpoint.resumeFrom", _one("checkpoint.resumeFrom", lambda s: getattr(s.checkpoint, "resume_from", None)), writable=False),
)

KNOBS: tuple[Knob, ...] = (
    Knob("trustRemoteCode", "model.trustRemoteCode", _trust,
         f"!{_opt('model.trustRemoteCode', 'false')} || params.spec.?trustRemoteCode.orValue(false)", "'true'",
         lambda p, ns: [str(p.trust_remote_code).lower()]),
    Knob("allowedS3Endpoints", "credentials.s3.endpoint", _endpoint,
         f"{_opt('credentials.s3.endpoint')} == '' || variables.spec.credentials.s3.endpoint in {_list_cel('allowedS3Endpoints')}",
         _opt("credentials.s3.endpoint"), lambda p, ns: p.allowed_s3_endpoints),
    Knob("allowedTrackingHosts", "tracking.uri", _tracking_host,
         f"{_opt('tracking.uri')} == '' || url(variables.spec.tracking.uri).getHost() in {_list_cel('allowedTrackingHosts')}"
         f" || url(variables.spec.tracking.uri).getHostname() in {_list_cel('allowedTrackingHosts')}",
         _opt("tracking.uri"), lambda p, ns: p.allowed_tracking_hosts),
    Knob("allowedTrackingHosts", "tracking.backend", _wandb_host,
         f"!({_opt('tracking.backend')} == 'wandb' && {_opt('tracking.mode', repr('online'))} == 'online' && {_opt('tracking.uri')} == ''"
         f" && {_opt('credentials.tracking.name')} != '') || '{WANDB_HOST}' in {_list_cel('allowedTrackingHosts')}",
         f"'wandb online without tracking.uri (its key goes to {WANDB_HOST})'", lambda p, ns: p.allowed_tracking_hosts),
    Knob("allowedPriorityClasses", "priorityClassName", _priority,
         f"{_opt('priorityClassName')} == '' || variables.spec.priorityClassName in {_list_cel('allowedPriorityClasses')}",
         _opt("priorityClassName"), lambda p, ns: p.allowed_priority_classes),
    Knob("allowedNodeSelectors", "resources.nodeSelector", _node_selector,
         f"{_opt('resources.nodeSelector', '{}')}.all(k, k in params.spec.?allowedNodeSelectors.orValue({{}}) && "
         "(size(params.spec.allowedNodeSelectors[k]) == 0 || variables.spec.resources.nodeSelector[k] in params.spec.allowedNodeSelectors[k]))",
         f"{_opt('resources.nodeSelector', '{}')}.map(k, k + '=' + variables.spec.resources.nodeSelector[k]).join(', ')",
         lambda p, ns: [f"{k}={'|'.join(v) or '*'}" for k, v in p.allowed_node_selectors.items()]),
    Knob("allowedTolerations", "resources.tolerations", _tolerations,
         f"{_opt('resources.tolerations', '[]')}.all(t, {_list_cel('allowedTolerations')}.exists(a, {_TOLERATION_CEL}))",
         f"{_opt('resources.tolerations', '[]')}.filter(t, !{_list_cel('allowedTolerations')}.exists(a, {_TOLERATION_CEL}))"
         ".map(t, t.?key.orValue('') + ' ' + t.?operator.orValue('Equal') + ' ' + t.?value.orValue('') + ' ' + t.?effect.orValue('')).join(', ')",
         lambda p, ns: [json.dumps(a.model_dump(by_alias=True, exclude_none=True), sort_keys=True) for a in p.allowed_tolerations]),
    *STORAGE_KNOBS,
)


def violations(spec, policy: PolicySpec, namespace: str, prefix: str = "spec") -> list[Problem]:
    """Every way `spec` (a FineTuneJobSpec) breaks `policy` in `namespace`, each naming the field and the knob."""
    problems = []
    for knob in KNOBS:
        for path, value in knob.check(spec, policy, namespace):
            problems.append(Problem(f"{prefix}.{path}", knob.message(value, policy, namespace)))
    return problems
