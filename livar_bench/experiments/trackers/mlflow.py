"""MLflow: a local SQLite store in the results folder unless ``MLFLOW_TRACKING_URI`` names another.

    default store  sqlite:///<out>/mlflow.db, artifacts in <out>/mlartifacts
    online         MLFLOW_TRACKING_URI=http://host:5000 (and MLflow's usual credentials variables)
    experiment     MLFLOW_EXPERIMENT_NAME, default "livar-bench"

Metrics ``<split>/<metric>`` at step = round; every setting as a parameter; run id, partition id, weights
hash, git sha, versions and the sweep as ``livar.*`` tags (group a sweep in the UI by ``livar.sweep``);
the run's records and accuracy plot as artifacts under ``livar/``. A resumed run reopens the same MLflow
run and logs only the rounds after the last one it holds. An http(s) server is probed first with a short
timeout, because MLflow's client retries an unreachable server for minutes.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from livar_bench.experiments.trackers.base import FAILED, FINISHED, KILLED, RunInfo, flat

STATUS = {FINISHED: "FINISHED", FAILED: "FAILED", KILLED: "KILLED"}
PROBE_S = 5.0


def reachable(uri: str) -> None:
    """Raise ``ConnectionError`` when an http(s) tracking server does not answer within PROBE_S (any HTTP
    answer, even an error status, means it is there)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_S).close()  # noqa: S310 (user's URI)
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConnectionError(f"MLflow server {uri} does not answer ({reason}); start it or fix "
                              "MLFLOW_TRACKING_URI") from None


class MLflowTracker:
    """One MLflow run per livar-bench run, through ``MlflowClient`` (no global active-run state)."""

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id = ""

    def open(self, run: RunInfo, previous: dict[str, Any] | None, save: Callable[[dict[str, Any]], None]) -> None:
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # the store's set-up chatter is not the user's business
            logging.getLogger(name).setLevel(logging.WARNING)
        uri = (previous or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{(run.out / 'mlflow.db').resolve()}"
        reachable(uri)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a server that goes away mid-run
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self._experiment(uri, run.out)
        self.run_id = (previous or {}).get("run_id") or self._unfinished(experiment, run)
        if self.run_id:  # continue it (a killed or failed process left it RUNNING, KILLED or FAILED)
            save({"tracking_uri": uri, "run_id": self.run_id})
            if self.client.get_run(self.run_id).info.status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
        else:
            created = self.client.create_run(experiment, run_name=run.name,
                                             tags={**{f"livar.{k}": v for k, v in run.tags.items()},
                                                   "livar.results": str(run.out.resolve())})
            self.run_id = created.info.run_id
            save({"tracking_uri": uri, "run_id": self.run_id})
        from mlflow.entities import Param

        # logged again when continuing: MLflow accepts a parameter logged twice with the same value
        params = [Param(k, str(v)[:6000]) for k, v in flat(run.settings).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _unfinished(self, experiment: str, run: RunInfo) -> str:
        """An MLflow run of this run and results folder that a killed process created but had not recorded
        yet ('' if none)."""
        where = str(run.out.resolve()).replace("'", "\\'")
        found = self.client.search_runs([experiment], filter_string=f"tags.`livar.run_id` = '{run.run_id}' and "
                                        f"tags.`livar.results` = '{where}' and attributes.status != 'FINISHED'",
                                        max_results=1)
        return found[0].info.run_id if found else ""

    def _experiment(self, uri: str, out: Path) -> str:
        from mlflow.exceptions import MlflowException

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "livar-bench"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (out / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def last_step(self) -> int:
        history = self.client.get_metric_history(self.run_id, "test/acc")
        return max((m.step for m in history), default=-1)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # one transaction per batch (at most 1000 metrics)
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, status: str, files: Iterable[Path]) -> None:
        for path in files:
            self.client.log_artifact(self.run_id, str(path), artifact_path="livar")
        self.client.set_terminated(self.run_id, STATUS[status])
