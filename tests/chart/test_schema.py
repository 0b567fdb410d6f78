"""values.schema.json rejects bad values before anything reaches the cluster,
with a message that names the value and what is wrong with it."""

from __future__ import annotations

import pytest

from .chartlib import template

pytestmark = pytest.mark.chart

# (flag, value, expected fragments of helm's message)
BAD = [
    ("--set", "replicaCount=0", ["at '/replicaCount'", "minimum: got 0, want 1"]),
    ("--set", "replicaCount=two", ["at '/replicaCount'", "got string, want integer"]),
    ("--set", "replicas=2", ["additional properties 'replicas' not allowed"]),
    ("--set", "scope=global", ["at '/scope'", "value must be one of 'cluster', 'namespaced'"]),
    ("--set", "watchNamespaces={Team_A}", ["at '/watchNamespaces/0'", "does not match pattern"]),
    ("--set", "image.pullPolicy=Sometimes", ["at '/image/pullPolicy'", "value must be one of"]),
    ("--set", "image.repository=", ["at '/image/repository'", "minLength"]),
    ("--set", "image.digest=sha256:abc", ["at '/image/digest'", "does not match pattern"]),
    ("--set", "operator.defaultBucketUri=http://bucket/x", ["at '/operator/defaultBucketUri'", "does not match pattern"]),
    ("--set-json", 'operator.allowedImagePrefixes="ghcr.io/"', ["at '/operator/allowedImagePrefixes'", "got string, want array"]),
    ("--set-json", "operator.allowedImagePrefixes=[]", ["at '/operator/allowedImagePrefixes'", "minItems"]),
    ("--set", "operator.metricsPort=70000", ["at '/operator/metricsPort'", "maximum: got 70,000, want 65,535"]),
    ("--set", "operator.clientQps=0", ["at '/operator/clientQps'", "exclusiveMinimum"]),
    ("--set", "operator.logLevel=trace", ["at '/operator/logLevel'", "value must be one of 'info', 'verbose', 'debug'"]),
    ("--set", "operator.extraTrainerEnv.A=1", ["at '/operator/extraTrainerEnv/A'", "got number, want string"]),
    ("--set-json", 'operator.extraTrainerEnv={"A":"a,b"}', ["at '/operator/extraTrainerEnv/A'", "does not match pattern"]),
    ("--set", "podSecurityContext.runAsNonRoot=false", ["at '/podSecurityContext/runAsNonRoot'", "value must be true"]),
    ("--set", "securityContext.allowPrivilegeEscalation=true", ["at '/securityContext/allowPrivilegeEscalation'", "value must be false"]),
    ("--set", "monitoring.podMonitor.interval=15 seconds", ["at '/monitoring/podMonitor/interval'", "does not match pattern"]),
    ("--set", "monitoring.prometheusRule.forOverrides.KubetuneJobNoProgress=soon", ["forOverrides/KubetuneJobNoProgress'", "does not match pattern"]),
    ("--set", "dashboards.enabled=yes", ["at '/dashboards/enabled'", "got string, want boolean"]),
    ("--set", "peering.name=Kube_Tune", ["at '/peering/name'", "does not match pattern"]),
]


@pytest.mark.parametrize("flag, value, fragments", BAD, ids=[b[1] for b in BAD])
def test_schema_rejects_bad_value_with_clear_message(flag, value, fragments):
    proc = template(check=False, extra=[flag, value])
    assert proc.returncode != 0, f"{value} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def test_schema_accepts_the_defaults_and_each_key_once_set():
    # The schema must not reject what values.yaml documents as valid.
    template(extra=["--set", "operator.defaultS3Endpoint=http://minio.minio:9000", "--set", "image.tag=0.1.1",
                    "--set", "image.digest=sha256:" + "a" * 64, "--set", "operator.defaultS3Region=eu-west-1",
                    "--set", "monitoring.prometheusRule.forOverrides.KubetuneJobNoProgress=1h30m",
                    "--set-json", "operator.clientQps=12.5", "--set", "serviceAccount.name=kt"])
