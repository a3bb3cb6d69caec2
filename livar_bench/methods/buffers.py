"""Server-state buffers of one component, keyed ``<namespace>.<buffer>.<param key>``.

A component's namespace is the name it is registered under (``fedadam``, or a preset's own name), so
one class registered twice keeps two sets of buffers; a stage used twice in one spec gets ``name#2`` for
its second occurrence (``Component.namespace``). Buffers live in ``ServerState.buffers``, never on the
method object, so they are checkpointed every round and a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import Tensor

from livar_bench.types import Params, ServerState

# (param key, x as float32, its buffers) -> (new x, new buffers); see ``per_tensor``.
Rule = Callable[[str, Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


class Buffers:
    """A writable view of a state's buffers under one namespace (the state itself is not mutated)."""

    def __init__(self, namespace: str, buffers: Mapping[str, Tensor]) -> None:
        self.namespace = namespace
        self._read = buffers
        self._written: dict[str, Tensor] = {}

    @property
    def mapping(self) -> dict[str, Tensor]:
        """Every component's buffers with this one's writes (new keys after the existing ones)."""
        return {**self._read, **self._written}

    def key(self, buffer: str, param: str) -> str:
        """The state key of ``buffer`` for parameter ``param`` (``fedadam.m.head.bias``)."""
        return f"{self.namespace}.{buffer}.{param}"

    def get(self, buffer: str, param: str) -> Tensor | None:
        """The stored tensor, or None before the component first wrote it."""
        key = self.key(buffer, param)
        return self._written[key] if key in self._written else self._read.get(key)

    def set(self, buffer: str, param: str, value: Tensor) -> None:
        self._written[self.key(buffer, param)] = value


class ClientBuffers:
    """A writable view of a state's per-client tensors under one namespace (``ServerState.client_state``).

    Keys are ``<namespace>.<buffer>.<client>.<param>``; values are stored as host (CPU) copies, whatever the
    device of the tensor handed in, so per-client state never occupies the accelerator.
    """

    def __init__(self, namespace: str, client_state: Mapping[str, Tensor]) -> None:
        self.namespace = namespace
        self.mapping: dict[str, Tensor] = dict(client_state)

    def key(self, buffer: str, client: int, param: str) -> str:
        return f"{self.namespace}.{buffer}.{client}.{param}"

    def set(self, buffer: str, client: int, param: str, value: Tensor) -> None:
        self.mapping[self.key(buffer, client, param)] = value.detach().to("cpu", copy=True)

    def of(self, buffer: str, client: int, params: Iterable[str]) -> Params:
        """{param: host tensor} for those of ``params`` that client ``client`` holds in ``buffer``."""
        return {p: t for p in params if (t := self.mapping.get(self.key(buffer, client, p))) is not None}


def per_tensor(state: ServerState, namespace: str, init: Mapping[str, Callable[[Tensor], Tensor]],
               rule: Rule) -> ServerState:
    """One server-optimiser step applied tensor by tensor: the loop every per-tensor method needs.

    For every global tensor x (key k, taken as float32), its buffers ``{name: tensor}`` are read (or, on
    the first round, made by ``init[name](x)``, e.g. ``torch.zeros_like``), ``rule(k, x, buffers)``
    returns the new x and the new buffers, and the new x is cast back to the global tensor's dtype.

    Args:
        state: the state before the step; its ``params`` are the tensors stepped.
        namespace: the component's namespace (``self.namespace``).
        init: buffer name -> its initial value for a tensor, in the order buffers are written.
        rule: the per-tensor update.

    Returns:
        The state with the new params and buffers (base-weight corrections unchanged).
    """
    buffers = Buffers(namespace, state.buffers)
    stepped: Params = {}
    for key, x in state.params.items():
        x32 = x.float()
        current = {name: buffers.get(name, key) for name in init}
        current = {name: make(x32) if current[name] is None else current[name] for name, make in init.items()}
        new_x, new = rule(key, x32, current)
        for name in init:
            buffers.set(name, key, new[name])
        stepped[key] = new_x.to(x.dtype)
    return state.evolve(params=stepped, buffers=buffers.mapping)
