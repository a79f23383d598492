"""Log an audit as one MLflow run: the settings as parameters, every check's value and CI
ends and the key statistics as metrics, the verdict as a tag, the bundle as artifacts. A trend
is one run too, its metrics logged at each checkpoint's step.

MLflow's client only (``mlflow-skinny``): no server needed; any tracking URI works, a local
SQLite store (``sqlite:///mlflow.db``) by default.
"""

from __future__ import annotations

import os
import time

from auditcam.integrations.scalars import summary_params
from auditcam.integrations.targets import Logged

EXPERIMENT = "auditcam"  # unless MLFLOW_EXPERIMENT_NAME names another
VERDICT_TAG = "auditcam.verdict"
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def log_audit(logged: Logged, uri: str) -> str:
    """Create one run at ``uri`` for the audit; return its run id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
    summary = logged.summary
    meta = summary.get("meta", {})
    tags = {VERDICT_TAG: "passed" if summary["passed"] else "failed", "mlflow.runName": str(meta.get("name", "audit"))}
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for step, scalars in logged.scalars() for k, v in scalars.items()]
        params = [Param(k, v) for k, v in summary_params(summary).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + BATCH])
        for path in logged.artifacts:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
