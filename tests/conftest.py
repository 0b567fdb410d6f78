"""Root conftest: fixture wiring only. Fixtures live in their own modules."""

# The local control plane, its node, MinIO and Prometheus fixtures
# (control_plane, kube, namespace, s3_bucket, real_node, trainer_image, prometheus, ...):
# see tests/harness/fixtures.py. The operator as a process, the S3 settings and
# the tiny model in a bucket (operator_factory, s3_env, bucket_with_assets, ...):
# see tests/harness/operator_fixture.py.
# A real MLflow server and a tracker that never answers: tests/harness/mlflow.py.
# The real model (SmolLM2-135M-Instruct, real_model): tests/harness/real_model.py.
pytest_plugins = ["tests.harness.fixtures", "tests.harness.operator_fixture", "tests.harness.mlflow", "tests.harness.real_model"]
