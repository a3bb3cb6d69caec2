"""Experiments of many runs: sweep grids and their expansion into run specs, executors, tuning.

    sweep       a grid (CLI lists or YAML) expanded into ``RunSpec``s, its checks and manifest
    executors   run a list of specs: locally (one after another) or on a Ray cluster
    slurm       run them as Slurm jobs through submitit (or submitit's local executor)
    trackers    mirror each run into TensorBoard, MLflow or Weights & Biases
    tune        a hyperparameter search on a validation split carved from client data
"""
