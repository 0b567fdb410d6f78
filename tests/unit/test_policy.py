"""The admin policy (KubetunePolicy): the operator's check and `kubetune
validate --policy` refuse every spec of `policy_cases` naming the field and the
knob, and accept it once the knob allows it (tests/cluster/test_admin_policy.py
applies the same specs to the API server's admission policy); the chart embeds
the admission policy generated from the same knobs; images match whole names;
no spec string reaches a command line able to expand `$(`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubetune_operator.api import parse_job
from kubetune_operator.api.admission_policy import RULES_FILE, admission_spec
from kubetune_operator.api.policy import KNOBS, PolicySpec, default_policy, parse_policy, violations
from kubetune_operator.api.yamlio import dump_yaml
from kubetune_operator.builders import build_serving_objects, build_training_objects
from kubetune_operator.cli import main
from kubetune_operator.settings import Settings, image_matches, load_settings

from .policy_cases import POLICY_CASES, PolicyCase, allowed_manifest, policy

ROOT = Path(__file__).resolve().parents[2]
NS = "team"


def _violations(doc: dict, spec: dict) -> list:
    parsed = parse_job(dict(doc, metadata={**doc["metadata"], "namespace": NS}))
    assert parsed.job is not None, parsed.problems
    return violations(parsed.job.spec, PolicySpec.model_validate(spec, by_alias=True), NS)


def test_the_base_policy_allows_the_base_job():
    assert _violations(allowed_manifest(NS), policy()) == []


def test_a_gguf_base_in_the_shared_read_only_prefix_is_allowed():
    doc = allowed_manifest(NS)
    doc["spec"]["model"] = {"uri": "s3://bucket-one/shared/models/SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert _violations(doc, policy()) == []


@pytest.mark.parametrize("case", POLICY_CASES, ids=lambda c: c.id)
def test_the_operator_refuses_what_the_policy_does_not_allow_naming_field_and_knob(case: PolicyCase):
    problems = _violations(case.manifest(NS), policy())
    assert problems, f"{case.id} passed the policy"
    assert all(p.path.startswith(f"spec.{case.field}") for p in problems), problems
    assert all(f"KubetunePolicy {case.knob}:" in p.message and "ask your cluster admin" in p.message for p in problems), problems
    if case.allow is not None:
        assert _violations(case.manifest(NS), policy(**case.allow)) == []


@pytest.mark.parametrize("case", POLICY_CASES, ids=lambda c: c.id)
def test_kubetune_validate_refuses_the_same_with_the_policy_file(case: PolicyCase, tmp_path, capsys):
    manifest, policy_file = tmp_path / "job.yaml", tmp_path / "policy.yaml"
    manifest.write_text(yaml.safe_dump(case.manifest(NS)))
    # As `kubectl get kubetunepolicy NAME -o yaml` prints it.
    policy_file.write_text(yaml.safe_dump({"apiVersion": "kubetune.io/v1alpha1", "kind": "KubetunePolicy",
                                           "metadata": {"name": "kubetune"}, "spec": policy()}))
    assert main(["validate", str(manifest), "--policy", str(policy_file), "--namespace", NS]) == 1
    err = capsys.readouterr().err
    assert f"spec.{case.field}" in err and f"KubetunePolicy {case.knob}:" in err
    assert main(["validate", str(manifest)]) == 0  # without a policy only the API is checked
    if case.allow is not None:
        policy_file.write_text(json.dumps(policy(**case.allow)))  # the spec alone works too
        assert main(["validate", str(manifest), "--policy", str(policy_file), "--namespace", NS]) == 0


def test_a_sweep_template_is_checked_against_the_policy(tmp_path, capsys):
    sweep = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": "s", "namespace": NS},
             "spec": {"template": POLICY_CASES[0].manifest(NS)["spec"] | {"dataset": {"trainUri": "s3://bucket-one/team/t.jsonl", "evalSplit": 0.1}},
                      "maxTrials": 2,
                      "parameters": [{"path": "training.learningRate", "values": [0.001, 0.002]}]}}
    manifest, policy_file = tmp_path / "sweep.yaml", tmp_path / "policy.json"
    manifest.write_text(yaml.safe_dump(sweep))
    policy_file.write_text(json.dumps(policy()))
    assert main(["validate", str(manifest), "--policy", str(policy_file)]) == 1
    assert "spec.template.model.trustRemoteCode" in capsys.readouterr().err


def test_storage_roots_are_per_namespace_and_refuse_climbing_out():
    p = PolicySpec(storage_roots=["s3://bk1/{namespace}/"], read_only_roots=["s3://bk1/shared"])
    assert p.roots("team", writable=True) == ["s3://bk1/team/"]
    assert p.roots("team", writable=False) == ["s3://bk1/team/", "s3://bk1/shared/"]
    doc = allowed_manifest("team")
    for uri, ok in (("s3://bk1/team/x", True), ("s3://bk1/team", True), ("s3://bk1/team-b/x", False), ("s3://bk1/teamx", False),
                    ("s3://bk1/team/../other/x", False), ("s3://bk1/team/./x", False), ("s3://bk12/team/x", False)):
        doc["spec"]["checkpoint"] = {"uri": uri}
        doc["spec"]["dataset"] = {"trainUri": "s3://bk1/shared/train.jsonl"}
        doc["spec"]["model"] = {"uri": "hf://org/model"}
        found = _violations(doc, {"storageRoots": ["s3://bk1/{namespace}/"], "readOnlyRoots": ["s3://bk1/shared"]})
        assert (found == []) is ok, (uri, found)


def test_the_default_policy_is_the_operator_s_bucket_per_namespace_and_its_endpoint():
    p = default_policy("s3://kubetune/", "http://minio:9000")
    assert p.storage_roots == ["s3://kubetune/{namespace}/"] and p.allowed_s3_endpoints == ["http://minio:9000"]
    assert p.secret_label == "kubetune.io/usable=true" and not p.trust_remote_code
    assert not (p.allowed_tolerations or p.allowed_priority_classes or p.allowed_node_selectors or p.allowed_tracking_hosts)
    assert Settings(default_bucket_uri="s3://b", default_s3_endpoint=None).policy == default_policy("s3://b", None)


def test_operator_settings_read_the_policy_and_name_a_malformed_one():
    cfg = load_settings({"KUBETUNE_POLICY": json.dumps({"trustRemoteCode": True, "storageRoots": ["s3://x/{namespace}/"]})})
    assert cfg.policy.trust_remote_code and cfg.policy.storage_roots == ["s3://x/{namespace}/"]
    for bad in ('{"trustRemoteCode": "yes"}', '{"allowedTolerations": [{"operator": "Maybe"}]}', '{"secretLabel": "a=b=c"}', "[1"):
        with pytest.raises(ValueError, match="KUBETUNE_POLICY"):
            load_settings({"KUBETUNE_POLICY": bad})
    assert parse_policy("") == PolicySpec()


def test_the_chart_embeds_the_admission_policy_generated_from_the_knobs():
    """A stale file fails here: run `make crds`."""
    assert (ROOT / "charts" / "kubetune" / RULES_FILE).read_text() == dump_yaml(admission_spec())
    spec = admission_spec()
    assert len(spec["validations"]) == len(KNOBS)
    for knob, validation in zip(KNOBS, spec["validations"]):
        assert knob.knob in validation["messageExpression"] and knob.field in validation["messageExpression"]
    assert spec["failurePolicy"] == "Fail" and spec["paramKind"]["kind"] == "KubetunePolicy"
    assert set(spec["matchConstraints"]["resourceRules"][0]["resources"]) == {"finetunejobs", "finetunesweeps"}


@pytest.mark.parametrize("image, allowed, ok", [
    ("registry.corp/team/trainer:1", "registry.corp", True),
    ("registry.corp.evil.io/x:1", "registry.corp", False),
    ("registry.corp:5000/x:1", "registry.corp", False),
    ("ghcr.io/kubetune/trainer:2", "ghcr.io/kubetune/trainer", True),
    ("ghcr.io/kubetune/trainer@sha256:" + "0" * 64, "ghcr.io/kubetune/trainer", True),
    ("ghcr.io/kubetune/trainer-evil:2", "ghcr.io/kubetune/trainer", False),
    ("ghcr.io/kubetune/trainer/sub:2", "ghcr.io/kubetune/trainer", True),
    ("ghcr.io/kubetune/anything:1", "ghcr.io/kubetune/", True),
    ("ghcr.io/kubetunex/x:1", "ghcr.io/kubetune/", False),
    ("ghcr.io/kubetune/trainer", "ghcr.io/kubetune/trainer", True),
])
def test_the_image_allowlist_matches_whole_hosts_and_paths(image, allowed, ok):
    assert image_matches(image, allowed) is ok


def test_no_spec_string_reaches_a_command_line_able_to_expand():
    """`$(` is refused at the API (bad_manifests); a lone `$` reaches the
    kubelet escaped, so nothing after it can become a reference."""
    from .test_builders import CFG, example

    job = example("quickstart.yaml", serving={"enabled": True, "extraArgs": ["--x=$HF_TOKEN", "--y=$$HOME"]},
                  credentials={"s3": {"secretName": "s3", "endpoint": "http://minio.local:9000/$x"}})
    job.status = None
    deployment = next(o for o in build_serving_objects(job, CFG) if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--x=$$HF_TOKEN" in args and "--y=$$$$HOME" in args and "--host=$(POD_IP)" in args
    pod = next(o for o in build_training_objects(job, CFG) if o["kind"] == "Job")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://minio.local:9000/$$x"


class SecretsApi:
    """Secrets' metadata as the API server would answer (None: not found; 403: not allowed)."""

    def __init__(self, secrets: dict[str, dict] | None, forbidden: bool = False):
        self.secrets, self.forbidden, self.asked = secrets or {}, forbidden, []

    def metadata(self, kind, namespace, name):
        from kubetune_operator.k8s import ApiError

        self.asked.append((kind, name))
        if self.forbidden:
            raise ApiError(403, "Forbidden", "secrets is forbidden")
        return self.secrets.get(name)


def _checker(api, label="kubetune.io/usable=true"):
    import logging

    from kubetune_operator.controllers.finetunejob.secrets import SecretChecker

    cfg = Settings(default_bucket_uri="s3://bucket-one", admin_policy=PolicySpec(secret_label=label))
    return SecretChecker(api, cfg, clock=lambda: 0.0), logging.getLogger("test")


def _job_with_secrets():
    doc = allowed_manifest(NS)
    doc["metadata"]["namespace"] = NS
    doc["spec"]["credentials"] = {"hfToken": {"name": "db-creds", "key": "password"}, "s3": {"secretName": "team-s3"}}
    return parse_job(doc).job


def test_only_secrets_with_the_policy_s_label_may_be_referenced():
    usable = {"labels": {"kubetune.io/usable": "true"}}
    api = SecretsApi({"team-s3": usable, "db-creds": {"labels": {"app": "db"}}})
    checker, log = _checker(api)
    verdict = checker.check(_job_with_secrets(), log)
    assert verdict.missing == []
    assert verdict.unusable == ["spec.credentials.hfToken.name: Secret db-creds is not labelled kubetune.io/usable=true"]
    assert "KubetunePolicy secretLabel" in verdict.unusable_message("kubetune.io/usable=true")
    assert {kind for kind, _ in api.asked} == {"Secret"}
    # Without the label rule, any existing Secret of the namespace will do.
    checker, log = _checker(SecretsApi({"team-s3": usable, "db-creds": {}}), label="")
    assert checker.check(_job_with_secrets(), log).unusable == []


def test_a_missing_secret_is_missing_and_an_unreadable_one_is_refused_under_a_label_rule():
    checker, log = _checker(SecretsApi({"team-s3": {"labels": {"kubetune.io/usable": "true"}}}))
    assert checker.check(_job_with_secrets(), log).missing == ["db-creds"]
    checker, log = _checker(SecretsApi(None, forbidden=True))
    verdict = checker.check(_job_with_secrets(), log)
    assert verdict.missing == [] and len(verdict.unusable) == 2 and "cannot be checked" in verdict.unusable[0]
    checker, log = _checker(SecretsApi(None, forbidden=True), label="")
    assert checker.check(_job_with_secrets(), log).unusable == []  # learned from the trainer pod instead, as before
