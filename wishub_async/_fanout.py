"""``fan_out`` (one call per key) and ``map`` (many items over the healthy keys)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from ._client import AsyncWishub

__all__ = ["Outcome", "OutcomeList", "OutcomeStream", "fan_out", "map_as_completed", "map_items"]

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ClientT = TypeVar("ClientT", bound="AsyncWishub")


@attrs.frozen
class Outcome(Generic[T]):
    """The result of one call in a ``fan_out`` or ``map``: a value or an error.

    Attributes:
        index: the position of the key (``fan_out``) or item (``map``).
        label: the label of the key used last (None if no key was reached).
        value: what the call returned, or None if it failed.
        error: the exception the call raised, or None if it succeeded.
        attempts: HTTP attempts the call made, retries and key moves included.
        elapsed: seconds the call took, queueing included.
    """

    index: int
    label: str | None
    value: T | None
    error: Exception | None
    attempts: int
    elapsed: float

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.error is None

    def unwrap(self) -> T:
        """The value, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # None only when T allows it


class OutcomeList(list[Outcome[T]]):
    """The outcomes of a ``fan_out`` or ``map``, in key or input order."""

    @property
    def values(self) -> list[T]:
        """The values of the calls that succeeded, in order."""
        return [outcome.value for outcome in self if outcome.error is None]  # type: ignore[misc]

    @property
    def failed(self) -> list[Outcome[T]]:
        """The outcomes that hold an error."""
        return [outcome for outcome in self if outcome.error is not None]

    def raise_for_errors(self) -> None:
        """Raise every error as one ``ExceptionGroup``; do nothing if all succeeded."""
        errors = [outcome.error for outcome in self if outcome.error is not None]
        if errors:
            raise ExceptionGroup(f"{len(errors)} of {len(self)} calls failed", errors)


OutcomeStream = MemoryObjectReceiveStream[Outcome[T]]


async def _run(
    client: ClientT,
    label: str | None,
    index: int,
    call: Callable[[ClientT], Awaitable[T]],
) -> Outcome[T]:
    view, record = client._tracked(label)  # noqa: SLF001 - the client's own helper
    started = time.monotonic()
    try:
        value = await call(view)
    except Exception as exc:  # noqa: BLE001 - an outcome holds any failure of the call
        elapsed = time.monotonic() - started
        return Outcome(index, record.key or label, None, exc, record.attempts, elapsed)
    return Outcome(
        index, record.key or label, value, None, record.attempts, time.monotonic() - started
    )


async def fan_out(
    client: ClientT,
    fn: Callable[[ClientT], Awaitable[T]],
    *,
    keys: Iterable[str] | None,
) -> OutcomeList[T]:
    """Run ``fn(view)`` once per key, concurrently (see ``AsyncWishub.fan_out``)."""
    labels = client.key_labels if keys is None else list(keys)
    for label in labels:
        client.with_key(label)  # unknown labels fail before anything is sent
    return await _collect(client, ((label, fn) for label in labels))


async def map_items(
    client: ClientT,
    fn: Callable[[ClientT, ItemT], Awaitable[T]],
    items: Iterable[ItemT],
) -> OutcomeList[T]:
    """Run ``fn(view, item)`` per item; outcomes in input order (``AsyncWishub.map``)."""
    return await _collect(client, ((None, _bind(fn, item)) for item in items))


Call = tuple[str | None, Callable[[ClientT], Awaitable[T]]]
"""A key label to pin (None: any healthy key) and the call to run on the view."""


def _bind(
    fn: Callable[[ClientT, ItemT], Awaitable[T]], item: ItemT
) -> Callable[[ClientT], Awaitable[T]]:
    def call(view: ClientT) -> Awaitable[T]:
        return fn(view, item)

    return call


async def _collect(client: ClientT, calls: Iterable[Call[ClientT, T]]) -> OutcomeList[T]:
    results: dict[int, Outcome[T]] = {}

    async def keep(outcome: Outcome[T]) -> None:
        results[outcome.index] = outcome

    await _work(client, calls, keep)
    return OutcomeList(results[index] for index in range(len(results)))


async def _work(
    client: ClientT,
    calls: Iterable[Call[ClientT, T]],
    deliver: Callable[[Outcome[T]], Awaitable[None]],
) -> None:
    """Run the calls on a bounded set of workers; ``deliver`` each outcome.

    As many workers as the client's ``max_concurrency``: enough to keep every slot
    busy, and no task or view per item before its turn (memory stays flat).
    """
    pending = enumerate(calls)
    workers = client._shared.max_concurrency  # noqa: SLF001 - sizing to the client's limit

    async def worker() -> None:
        for index, (label, call) in pending:
            await deliver(await _run(client, label, index, call))

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)


@asynccontextmanager
async def map_as_completed(
    client: ClientT,
    fn: Callable[[ClientT, ItemT], Awaitable[T]],
    items: Iterable[ItemT],
) -> AsyncIterator[OutcomeStream[T]]:
    """Yield a stream of outcomes in completion order (``AsyncWishub.map_as_completed``)."""
    send: MemoryObjectSendStream[Outcome[T]]
    send, receive = anyio.create_memory_object_stream[Outcome[T]](math.inf)

    async def produce() -> None:
        async with send:
            await _work(client, ((None, _bind(fn, item)) for item in items), send.send)

    try:
        async with anyio.create_task_group() as group, receive:
            group.start_soon(produce)
            try:
                yield receive
            finally:
                group.cancel_scope.cancel()
    except BaseExceptionGroup as grouped:
        # The producer never raises (outcomes hold the errors): a lone exception is the
        # caller's own, from the body of the `async with`; give it back as it was.
        if len(grouped.exceptions) == 1:
            raise grouped.exceptions[0] from None
        raise
