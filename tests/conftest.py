"""Root conftest: fixture wiring only. Fixtures live in their own modules."""

# The local control plane, MinIO, pod runner and Prometheus fixtures
# (control_plane, kube, namespace, s3_bucket, pod_runner, prometheus, ...):
# see tests/harness/fixtures.py.
pytest_plugins = ["tests.harness.fixtures"]
