"""`helm lint` and `helm template` for the default values and each documented
combination, and what the rendered objects must (and must not) contain."""

from __future__ import annotations

import json

import pytest
import yaml

from .chartlib import CHART, ROOT, by_kind, one, render, run, template, tool

pytestmark = pytest.mark.chart

NS = "kubetune-system"
# The combinations docs/helm.md documents; each must lint and render clean.
COMBINATIONS = {
    "default": {},
    "namespaced-release-namespace": {"scope": "namespaced"},
    "namespaced-two-namespaces": {"scope": "namespaced", "watchNamespaces": "{ml-a,ml-b}"},
    "monitoring": {"monitoring.serviceMonitor.enabled": "true", "monitoring.podMonitor.enabled": "true"},
    "alerts": {"monitoring.prometheusRule.enabled": "true"},
    "dashboards": {"dashboards.enabled": "true"},
    "single-replica-standalone": {"replicaCount": "1", "peering.enabled": "false"},
    "everything-namespaced": {"scope": "namespaced", "watchNamespaces": "{ml-a}", "monitoring.serviceMonitor.enabled": "true",
                              "monitoring.podMonitor.enabled": "true", "monitoring.prometheusRule.enabled": "true",
                              "dashboards.enabled": "true"},
}


@pytest.mark.parametrize("name", COMBINATIONS)
def test_lint_and_template_clean(name):
    values = COMBINATIONS[name]
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    lint = run(tool("helm"), "lint", "--strict", str(CHART), "--namespace", NS, "--kube-version", "1.36.3", *sets)
    assert "0 chart(s) failed" in lint.stdout
    docs = render(values, monitoring_api=True)
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
        assert "app.kubernetes.io/part-of" in doc["metadata"].get("labels", {}), doc["metadata"]["name"]
    # Rendering is deterministic: upgrades with unchanged values change nothing.
    assert template(values, monitoring_api=True).stdout == template(values, monitoring_api=True).stdout


@pytest.mark.parametrize("name", ["finetunejob.yaml", "finetunesweep.yaml", "kubetunepolicy.yaml"])
def test_crd_copy_is_identical_to_crds_dir(name):
    # Helm installs charts/kubetune/crds/; crds/ is the single source.
    assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), \
        f"charts/kubetune/crds/{name} differs from crds/: run `make crds`"


def test_deployment_is_hardened_and_probed():
    dep = one(render(), "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["command"] == ["kopf"]
    assert c["args"][:2] == ["run", "--module=kubetune_operator.handlers"]
    assert "--all-namespaces" in c["args"] and "--peering=kubetune" in c["args"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in c["args"]
    assert "--standalone" not in c["args"]


def _env(dep: dict) -> dict[str, str]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def test_operator_settings_env_is_read_and_parsed_by_the_operator():
    from kubetune_operator.settings import ENV_PREFIX, ENV_VARS, load_settings

    # --set makes 7.5 a string (helm parses only ints and bools); --set-json keeps the number.
    dep = one(render({"operator.defaultS3Endpoint": "http://minio:9000"}, extra=["--set-json", "operator.clientQps=7.5"],
                     string_values={"operator.extraTrainerEnv.HF_HUB_OFFLINE": "1"}), "Deployment")
    env = _env(dep)
    ours = {k for k in env if k.startswith(ENV_PREFIX)}
    assert ours - set(ENV_VARS) == set(), "the chart sets variables the operator does not read"
    settings = load_settings(env)
    assert settings.allowed_image_prefixes == ("ghcr.io/kubetune/",)
    assert settings.default_s3_endpoint == "http://minio:9000" and settings.client_qps == 7.5
    assert settings.extra_trainer_env == {"HF_HUB_OFFLINE": "1"}
    assert settings.watched_namespaces == () and settings.peering_name == "kubetune"
    assert settings.liveness_port == 8081 and settings.metrics_port == 8080
    # Replicas must not share a peering priority (Kopf would pause them all).
    assert "KUBETUNE_PEERING_PRIORITY" not in env


def test_the_admin_policy_is_one_kubetune_policy_the_operator_reads_too():
    """The KubetunePolicy (the admission policy's params) and the operator's
    KUBETUNE_POLICY are the same policy: the values plus the default bucket's
    per-namespace prefix and the default S3 endpoint."""
    from kubetune_operator.api.admission_policy import admission_spec
    from kubetune_operator.api.policy import PolicySpec, default_policy
    from kubetune_operator.settings import load_settings

    docs = render({"operator.defaultS3Endpoint": "http://minio:9000"},
                  extra=["--set-json", 'policy.allowedTolerations=[{"key":"nvidia.com/gpu","operator":"Exists"}]',
                         "--set-json", 'policy.readOnlyRoots=["s3://models/"]'])
    policy = one(docs, "KubetunePolicy")
    settings = load_settings(_env(one(docs, "Deployment")))
    assert PolicySpec.model_validate(policy["spec"], by_alias=True) == settings.policy
    assert settings.policy.storage_roots == ["s3://kubetune/{namespace}/"] and settings.policy.read_only_roots == ["s3://models/"]
    assert settings.policy.allowed_s3_endpoints == ["http://minio:9000"] and settings.policy.allowed_tolerations[0].key == "nvidia.com/gpu"
    # Unchanged values: the chart's policy is the operator's own default.
    assert load_settings(_env(one(render(), "Deployment"))).policy == default_policy("s3://kubetune", None)
    vap, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    assert vap["spec"] == admission_spec()
    assert binding["spec"]["paramRef"] == {"name": policy["metadata"]["name"], "parameterNotFoundAction": "Deny"}
    assert binding["spec"]["policyName"] == vap["metadata"]["name"] and binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {}
    namespaced = one(render({"scope": "namespaced", "watchNamespaces": "{ml-a,ml-b}"}), "ValidatingAdmissionPolicyBinding")
    assert namespaced["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml-a", "ml-b"]}]}
    assert not by_kind(render({"policy.admission.enabled": "false"}), "ValidatingAdmissionPolicy")
    # A typo in a knob fails the install (values.schema.json mirrors the KubetunePolicy's fields).
    failed = template({"policy.allowedTolerationz": "[]"}, check=False)
    assert failed.returncode != 0 and "allowedTolerationz" in failed.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["policy"]["properties"]
    assert set(schema) - {"admission"} == {f.alias for f in PolicySpec.model_fields.values()}


def test_namespaced_mode_grants_nothing_cluster_wide():
    docs = render({"scope": "namespaced", "watchNamespaces": "{ml-a,ml-b}"})
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    assert not by_kind(docs, "ClusterKopfPeering")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["ml-a", "ml-b"]
    for rb in by_kind(docs, "RoleBinding"):
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "kt-kubetune", "namespace": NS}]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == ["ml-a", "ml-b"]
    dep = one(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml-a" in args and "--namespace=ml-b" in args and "--all-namespaces" not in args
    assert _env(dep)["KUBETUNE_WATCH_NAMESPACES"] == "ml-a,ml-b"


def test_namespaced_mode_defaults_to_release_namespace():
    docs = render({"scope": "namespaced"})
    assert [r["metadata"]["namespace"] for r in by_kind(docs, "Role")] == [NS]


def _rules(docs):
    return [r for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") for r in role["rules"]]


@pytest.mark.parametrize("values", [{}, {"scope": "namespaced"}], ids=["cluster", "namespaced"])
def test_rbac_never_grants_secrets_data_exec_wildcards_or_deletes_beyond_serving(values):
    rules = _rules(render(values))
    assert rules
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        # Secrets: get alone (the operator asks for metadata only), never list, watch or writes.
        assert "secrets" not in rule["resources"] or (rule["resources"] == ["secrets"] and rule["verbs"] == ["get"]), rule
        assert not {"pods/exec", "pods/attach", "pods/portforward", "pods/log"} & set(rule["resources"]), rule
        assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        # delete only on a job's own vLLM objects once it is no longer to be served (checked by owner uid first).
        assert "delete" not in rule["verbs"] or rule["resources"] in (["services"], ["deployments"]), rule
        assert "rbac.authorization.k8s.io" not in rule["apiGroups"], rule


def test_cluster_role_and_namespaced_role_grant_the_same_namespaced_verbs():
    cluster = one(render(), "ClusterRole")["rules"]
    role = one(render({"scope": "namespaced"}), "Role")["rules"]
    namespaced_groups = {"kubetune.io", "", "batch", "apps", "events.k8s.io"}
    pick = lambda rules: [r for r in rules if set(r["apiGroups"]) <= namespaced_groups]  # noqa: E731
    assert pick(cluster) == pick(role)


def test_monitoring_objects_need_the_prometheus_operator_api():
    values = {"monitoring.serviceMonitor.enabled": "true", "monitoring.podMonitor.enabled": "true",
              "monitoring.prometheusRule.enabled": "true"}
    kinds = {d["kind"] for d in render(values, monitoring_api=False)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    docs = render(values, monitoring_api=True)
    sm = one(docs, "ServiceMonitor")
    monitors = {d["metadata"]["name"].rsplit("-", 1)[-1]: d for d in by_kind(docs, "PodMonitor")}
    assert sorted(monitors) == ["serving", "trainer"]
    pm, serving = monitors["trainer"], monitors["serving"]
    # vLLM pods: its own metrics on its API port, for the serving dashboard.
    assert serving["metadata"]["name"].endswith("-serving")
    assert serving["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "kubetune-serving"}
    assert serving["spec"]["podMetricsEndpoints"][0]["port"] == "http" and serving["spec"]["namespaceSelector"] == {"any": True}
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    # The operator's series carry jobs' `namespace`/`job` labels that must beat the target labels;
    # a trainer pod's own claims must not (tests/chart/test_prometheus checks both on a real Prometheus).
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
    assert pm["spec"]["podMetricsEndpoints"][0]["honorLabels"] is False
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "kubetune-trainer"}
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    none = {d["kind"] for d in render(monitoring_api=True)}
    assert not none & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}, "monitoring must be off by default"


def test_prometheus_rule_is_the_alerts_file():
    alerts = yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    rule = one(render({"monitoring.prometheusRule.enabled": "true"}, monitoring_api=True), "PrometheusRule")
    assert rule["spec"]["groups"] == alerts["groups"]


def test_prometheus_rule_overrides_and_disables():
    rule = one(render({"monitoring.prometheusRule.enabled": "true",
                       "monitoring.prometheusRule.forOverrides.KubetuneJobNoProgress": "30m",
                       "monitoring.prometheusRule.disabledAlerts": "{KubetuneGPUMemoryNearFull}",
                       "monitoring.prometheusRule.alertLabels.team": "ml"}, monitoring_api=True), "PrometheusRule")
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "KubetuneGPUMemoryNearFull" not in rules
    assert rules["KubetuneJobNoProgress"]["for"] == "30m"
    assert all(r["labels"]["team"] == "ml" and r["labels"]["severity"] for r in rules.values())
    # The file itself is untouched by an override (deepCopy in the template).
    assert one(render({"monitoring.prometheusRule.enabled": "true"}, monitoring_api=True),
               "PrometheusRule")["spec"]["groups"][0]["rules"][0]["for"] == "10m"


def test_prometheus_rule_rejects_unknown_alert_names():
    proc = template({"monitoring.prometheusRule.enabled": "true",
                     "monitoring.prometheusRule.forOverrides.KubetuneNoSuchAlert": "5m"}, monitoring_api=True, check=False)
    assert proc.returncode != 0 and 'unknown alert "KubetuneNoSuchAlert"' in proc.stderr


def test_dashboards_ship_as_sidecar_configmaps():
    assert not by_kind(render(), "ConfigMap"), "dashboards must be off by default"
    cms = by_kind(render({"dashboards.enabled": "true", "dashboards.annotations.grafana_folder": "kubetune"}), "ConfigMap")
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(cms) == len(files) == 3  # training, operator, serving
    for cm, path in zip(sorted(cms, key=lambda c: c["metadata"]["name"]), files):
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "kubetune"}
        (content,) = cm["data"].values()
        assert json.loads(content) == json.loads(path.read_text())


@pytest.mark.parametrize("values, message", [
    ({"replicaCount": "2", "peering.enabled": "false"}, "replicaCount > 1 needs peering.enabled=true"),
    ({"watchNamespaces": "{ml-a}"}, "watchNamespaces is only used with scope=namespaced"),
    ({"operator.livenessPort": "8080"}, "operator.metricsPort and operator.livenessPort must differ"),
    ({"monitoring.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"}, "needs metrics.service.enabled=true"),
])
def test_cross_field_checks_fail_with_a_clear_message(values, message):
    proc = template(values, monitoring_api=True, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
