"""Experiment trackers: each run mirrored, round by round, into TensorBoard, MLflow or Weights & Biases.

    base          what a tracker gets (RunInfo) and the calls it answers (open, last_step, log, finish)
    hub           the event consumer: round-loop events to tracker calls, one thread per tracker,
                  failures as one warning, the ledger that lets a resumed run continue its tracker runs
    tensorboard   event files under <out>/tensorboard
    mlflow        a SQLite store in the results folder, or MLFLOW_TRACKING_URI
    wandb         offline runs under <out>/wandb, or WANDB_MODE=online

Each tracker is an optional extra (``pip install 'livar-bench[tensorboard]'``, ``[mlflow]``, ``[wandb]``,
or ``[trackers]`` for all three), imported only on its own thread when its first run starts.
"""

from livar_bench.experiments.trackers.hub import TRACKERS, TrackerConfig, Trackers, check_trackers, fan_out

__all__ = ["TRACKERS", "TrackerConfig", "Trackers", "check_trackers", "fan_out"]
