"""The two components ``flwr run`` starts: the ServerApp (round loop, strategy) and the ClientApp."""

from livar_bench.flower.clientapp import app as client_app
from livar_bench.flower.serverapp import app as server_app

__all__ = ["client_app", "server_app"]
