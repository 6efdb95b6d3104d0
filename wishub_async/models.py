"""Response objects: frozen attrs classes built by the converter in ``_converter``.

Unknown fields in a response are ignored, so new platform fields never break
parsing; ``null`` counts as absent for fields that have a default.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import attrs

__all__ = ["Model", "ModelList"]


@attrs.frozen
class Model:
    """One model an AppKey may call.

    Attributes:
        id: the model id to pass as ``model=`` (an opaque id, possibly non-ASCII).
        object: always ``"model"``.
        created: when the model was created, or None (the platform often sends "").
        owned_by: the owning organisation ("" when the platform leaves it out).
    """

    id: str
    object: str = "model"
    created: datetime | None = None
    owned_by: str = ""


@attrs.frozen
class ModelList:
    """The models one AppKey sees. Iterating it yields each ``Model``.

    Attributes:
        object: always ``"list"``.
        data: the models, in the server's order.
    """

    data: tuple[Model, ...] = ()
    object: str = "list"

    def __iter__(self) -> Iterator[Model]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def ids(self) -> list[str]:
        """The model ids, in the server's order."""
        return [model.id for model in self.data]
