"""Running many calls at once: ``fan_out`` (one per key) and ``map`` (one per item).

Each call runs ``fn(view)`` on a view made for it by the client (pinned to a key,
or free to use any key its client may use), which records the call's attempts and
the key it used last. The client passes in everything this module needs: the calls,
the way to make a view, and how many run at once.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _clock

if TYPE_CHECKING:
    from ._context import CallRecord

__all__ = ["Outcome", "OutcomeList", "OutcomeStream", "as_completed", "bind_items", "run"]

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ViewT = TypeVar("ViewT")


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
"""What ``map_as_completed`` yields: an async iterator of ``Outcome``s, as they end."""

Call = tuple[str | None, Callable[[ViewT], Awaitable[T]]]
"""A key label to pin (None: whatever the client may use) and the call to run."""

MakeView = Callable[[str | None], tuple[ViewT, "CallRecord"]]
"""Make a tracked view for one call, pinned to the label if one is given."""


def bind_items(
    fn: Callable[[ViewT, ItemT], Awaitable[T]], items: Iterable[ItemT]
) -> Iterator[Call[ViewT, T]]:
    """The calls of a ``map``: ``fn(view, item)`` per item, on no particular key."""
    for item in items:
        yield None, _Bound(fn, item)


@attrs.frozen
class _Bound(Generic[ViewT, ItemT, T]):
    fn: Callable[[ViewT, ItemT], Awaitable[T]]
    item: ItemT

    def __call__(self, view: ViewT) -> Awaitable[T]:
        return self.fn(view, self.item)


async def run(
    calls: Iterable[Call[ViewT, T]], make_view: MakeView[ViewT], *, workers: int
) -> OutcomeList[T]:
    """Run every call; their outcomes in the calls' order."""
    results: dict[int, Outcome[T]] = {}

    async def keep(outcome: Outcome[T]) -> None:
        results[outcome.index] = outcome

    await _work(calls, make_view, keep, workers)
    return OutcomeList(results[index] for index in range(len(results)))


@asynccontextmanager
async def as_completed(
    calls: Iterable[Call[ViewT, T]], make_view: MakeView[ViewT], *, workers: int
) -> AsyncIterator[OutcomeStream[T]]:
    """Yield a stream of outcomes in completion order (``AsyncWishub.map_as_completed``)."""
    send: MemoryObjectSendStream[Outcome[T]]
    send, receive = anyio.create_memory_object_stream[Outcome[T]](math.inf)

    async def produce() -> None:
        async with send:
            await _work(calls, make_view, send.send, workers)

    try:
        async with anyio.create_task_group() as group, receive:
            group.start_soon(produce)
            try:
                yield receive
            finally:
                group.cancel_scope.cancel()
    except BaseExceptionGroup as grouped:
        # Outcomes hold the calls' errors: a lone exception is the caller's own (from
        # the body of the `async with`) or the items' iterable's; give it back as is.
        if len(grouped.exceptions) == 1:
            raise grouped.exceptions[0] from None
        raise


async def _work(
    calls: Iterable[Call[ViewT, T]],
    make_view: MakeView[ViewT],
    deliver: Callable[[Outcome[T]], Awaitable[None]],
    workers: int,
) -> None:
    """Run the calls on a bounded set of workers; ``deliver`` each outcome.

    As many workers as the client's ``max_concurrency``: enough to keep every slot
    busy, and no task or view per item before its turn (memory stays flat). An error
    raised by the iterable of calls itself stops the work and comes out as it is.
    """
    pending = enumerate(calls)
    broken: list[Exception] = []

    async def worker() -> None:
        while True:
            try:
                index, (label, call) = next(pending)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - the items' own error, raised below
                broken.append(exc)
                group.cancel_scope.cancel()
                return
            await deliver(await _outcome(index, label, call, make_view))

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)
    if broken:
        raise broken[0]


async def _outcome(
    index: int, label: str | None, call: Callable[[ViewT], Awaitable[T]], make_view: MakeView[ViewT]
) -> Outcome[T]:
    view, record = make_view(label)
    started = _clock.now()
    try:
        value = await call(view)
    except Exception as exc:  # noqa: BLE001 - an outcome holds any failure of the call
        return Outcome(
            index, record.label or label, None, exc, record.attempts, _clock.now() - started
        )
    return Outcome(
        index, record.label or label, value, None, record.attempts, _clock.now() - started
    )
