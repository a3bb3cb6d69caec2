"""Federated runs: the set-up, the round kernel both engines share, the round-1 cache, the run folder, the loop.

    setup          data, the shared model, the partition and the client splits a run builds first
    partitions     the run's partition, drawn from its seed, saved once per partition id and reused
    kernel         who takes part in a round, the server's context, the client phase of a round
    local_engine   the in-process engine (every sampled client trains here)
    round1_cache   a sweep's shared first round (a wrapper around the engine's client phase)
    run_folder     the one writer of a run's folder (records, tidy rows, checkpoint, metrics)
    loop           ``run_federation``: locks, resume, the rounds, evaluation, commit
"""

from livar_bench.federation.kernel import TrainedRound, sample_clients, train_round_clients, with_rank
from livar_bench.federation.loop import Event, Launcher, RunOutcome, run_federation
from livar_bench.federation.run_folder import RunFolder, tidy_rows
from livar_bench.federation.setup import Setup, load_run_dataset, setup_run

__all__ = [
    "Event", "Launcher", "RunFolder", "RunOutcome", "Setup", "TrainedRound", "load_run_dataset", "run_federation",
    "sample_clients", "setup_run", "tidy_rows", "train_round_clients", "with_rank",
]
