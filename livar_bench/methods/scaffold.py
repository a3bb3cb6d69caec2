"""SCAFFOLD (Karimireddy et al., ICML 2020, arXiv 1910.06378, Algorithm 1 with option II).

With x the global tensors, c the server control variate, c_i client i's (both zero before round 1),
eta_l the clients' learning rate, K_i the local steps client i actually took (``ClientUpdate.num_steps``),
S the round's replies and N the federation's clients:

    client i:  y_i <- y_i - eta_l (g_i(y_i) - c_i + c)       K_i corrected steps from y_i = x
               c_i+ = c_i - c + (x - y_i) / (K_i eta_l)       (option II)
    server:    x  <- x + eta_g * sum_i w_i (y_i - x)
               c  <- c + (|S| / N) * sum_i w_i (c_i+ - c_i)

w_i = 1/|S| (the paper; ``weights=samples``: n_i / sum_j n_j). The corrected step is the gradient of
cross-entropy + <c - c_i, w> (``client.objectives.ControlCorrected``), so it runs unchanged under the
clients' optimiser and in sequential and packed training: the server sends each client c - c_i with its
start (``ClientSide.inputs``; the download doubles) and computes c_i+ from the client's y_i and K_i
(the same value the client would compute; its bytes are counted as uploaded: the upload doubles). c is
server state (``scaffold.c.<param>``), the c_i per-client state in host memory (``ServerState.client_state``,
``scaffold.c.<client>.<param>``), both checkpointed. A client that took no step keeps its c_i.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

from livar_bench.client.objectives import ControlCorrected
from livar_bench.errors import BenchError
from livar_bench.methods.base import Aggregator
from livar_bench.methods.client_side import ClientSide
from livar_bench.methods.describe import describe
from livar_bench.ops.scaffold import option_ii, server_control
from livar_bench.ops.weighted import sample_weights
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerState


@describe("scaffold", paper="https://arxiv.org/abs/1910.06378", label="SCAFFOLD", order=21,
          summary="Control variates: clients step with g - c_i + c; option II updates c_i, the server "
                  "moves c by |S|/N of their mean change.")
class Scaffold(Aggregator):
    """x + eta_g * mean(y_i - x); control variates c (server) and c_i (per client, option II)."""

    eta: Annotated[float, Field(gt=0, description="server learning rate eta_g on the mean client update "
                                                  "(the paper's default 1)")] = 1.0
    weights: Annotated[Literal["uniform", "samples"], Field(
        description="weights of the client means: uniform 1/|S| as the paper, or sample counts n_i as FedAvg")] = \
        "uniform"

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "it updates each client's own control variate from that client's update"

    def client_side(self) -> ClientSide:
        return ClientSide(objective=ControlCorrected(), inputs=self.correction, upload_copies=2)

    def correction(self, state: ServerState, client_id: int) -> Params:
        """c - c_i for client ``client_id`` (zero before it first trained, and before round 1)."""
        server, own = self.buffers(state), self.client_buffers(state)
        out = {}
        for key, x in state.params.items():
            c = server.get("c", key)
            c_i = own.of("c", client_id, [key]).get(key)
            c = torch.zeros_like(x, dtype=torch.float32) if c is None else c.float()
            out[key] = c - c_i.to(c.device) if c_i is not None else c.clone()
        return out

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        lr = ctx.local_lr
        if lr is None or not lr > 0:
            raise BenchError("scaffold needs the clients' learning rate (RoundContext.local_lr); the round "
                             "loop sets it from --lr")
        missing = [u.client_id for u in updates if u.num_steps is None]
        if missing:
            raise BenchError(f"scaffold needs the local steps of every update; clients {missing} report none")
        w = ([1.0 / len(updates)] * len(updates) if self.weights == "uniform"
             else sample_weights([u.num_samples for u in updates]).tolist())
        server, own = self.buffers(state), self.client_buffers(state)
        params: Params = {}
        for key, x in state.params.items():
            x32 = x.float()
            c = server.get("c", key)
            c = torch.zeros_like(x32) if c is None else c.float()
            mean_dy = torch.zeros_like(x32)
            changes: list[Tensor] = []
            for wi, u in zip(w, updates, strict=True):
                y = u.params[key].float()
                mean_dy += wi * (y - x32)
                old = own.of("c", u.client_id, [key]).get(key)
                c_i = torch.zeros_like(x32) if old is None else old.to(x32.device).float()
                new = option_ii(c_i, c, x32, y, int(u.num_steps), lr) if u.num_steps else c_i
                changes.append(new - c_i)
                own.set("c", u.client_id, key, new)  # a host copy
            params[key] = (x32 + self.eta * mean_dy).to(x.dtype)
            server.set("c", key, server_control(c, changes, w, len(updates), ctx.num_clients))
        return state.evolve(params=params, buffers=server.mapping, client_state=own.mapping)
