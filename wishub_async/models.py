"""Response objects: frozen attrs classes built by the converter in ``_converter``.

Unknown fields in a response are ignored, so new platform fields never break
parsing; ``null`` counts as absent for fields that have a default.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterator
from datetime import datetime

import attrs

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "Choice",
    "ChoiceDelta",
    "ChunkChoice",
    "Embedding",
    "EmbeddingList",
    "FunctionCall",
    "Image",
    "ImageList",
    "Model",
    "ModelList",
    "RerankItem",
    "RerankResult",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]


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


@attrs.frozen
class Usage:
    """Token counts of one call.

    Attributes:
        prompt_tokens: tokens in the input.
        completion_tokens: tokens generated (0 for embeddings).
        total_tokens: both together.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@attrs.frozen
class FunctionCall:
    """The function a tool call invokes: its name and JSON-encoded arguments.

    In a streamed delta either part may be missing (None): the arguments arrive in
    pieces that ``ChatStream.collect`` joins.
    """

    name: str | None = None
    arguments: str | None = None


@attrs.frozen
class ToolCall:
    """One tool call the model asked for.

    Attributes:
        id: the call's id, to answer with a ``tool`` message.
        type: ``"function"``.
        function: the function's name and arguments.
    """

    id: str = ""
    type: str = "function"
    function: FunctionCall = FunctionCall()


@attrs.frozen
class ChatMessage:
    """The message of one choice.

    Attributes:
        role: ``"assistant"``.
        content: the answer text (None when the model only called tools).
        reasoning_content: a reasoning model's thinking, when it sends it.
        tool_calls: the tool calls the model asked for.
    """

    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@attrs.frozen
class Choice:
    """One answer of a chat completion.

    Attributes:
        index: its position among the choices.
        message: the message.
        finish_reason: why generation stopped (``stop``, ``length``,
            ``content_filter``, ``tool_calls``, ``function_call``), or None.
    """

    index: int = 0
    message: ChatMessage = ChatMessage()
    finish_reason: str | None = None


@attrs.frozen
class ChatCompletion:
    """A whole chat answer (``POST /chat/completions``, or a collected stream).

    Attributes:
        id: the completion's id.
        object: ``"chat.completion"``.
        created: when it was created, or None.
        model: the model that answered.
        choices: the answers (one unless ``n`` was set).
        usage: token counts, when the server sent them.
        system_fingerprint: the backend configuration, when sent.
    """

    id: str = ""
    object: str = "chat.completion"
    created: datetime | None = None
    model: str = ""
    choices: tuple[Choice, ...] = ()
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @property
    def text(self) -> str:
        """The first choice's content ("" when there is none)."""
        return (self.choices[0].message.content or "") if self.choices else ""

    @property
    def reasoning(self) -> str:
        """The first choice's reasoning content ("" when there is none)."""
        return (self.choices[0].message.reasoning_content or "") if self.choices else ""


@attrs.frozen
class ToolCallDelta:
    """A piece of a tool call in a stream; pieces with the same ``index`` add up."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


@attrs.frozen
class ChoiceDelta:
    """What one chunk adds to a choice's message.

    Attributes:
        role: set in the first chunk only.
        content: the next piece of the answer text.
        reasoning_content: the next piece of a reasoning model's thinking.
        tool_calls: pieces of tool calls.
    """

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@attrs.frozen
class ChunkChoice:
    """One choice's part of a stream chunk.

    Attributes:
        index: which choice this piece belongs to.
        delta: what it adds.
        finish_reason: set on the choice's last chunk.
    """

    index: int = 0
    delta: ChoiceDelta = ChoiceDelta()
    finish_reason: str | None = None


@attrs.frozen
class ChatCompletionChunk:
    """One event of a streamed chat answer.

    With ``stream_options={"include_usage": True}`` the last chunk has no choices and
    carries ``usage``.

    Attributes:
        id: the completion's id (the same in every chunk).
        object: ``"chat.completion.chunk"``.
        created: when the completion was created, or None.
        model: the model that answers.
        choices: the pieces of each choice this chunk adds.
        usage: token counts (usually only on the last chunk).
        system_fingerprint: the backend configuration, when sent.
    """

    id: str = ""
    object: str = "chat.completion.chunk"
    created: datetime | None = None
    model: str = ""
    choices: tuple[ChunkChoice, ...] = ()
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @property
    def text(self) -> str:
        """The first choice's new content ("" when this chunk adds none)."""
        return (self.choices[0].delta.content or "") if self.choices else ""

    @property
    def reasoning(self) -> str:
        """The first choice's new reasoning content ("" when none)."""
        return (self.choices[0].delta.reasoning_content or "") if self.choices else ""


@attrs.frozen
class Embedding:
    """One input's vector.

    The platform sends it under ``embeddings`` (plural), OpenAI under ``embedding``;
    both are read, and base64 vectors (little-endian float32) are decoded.

    Attributes:
        index: the position of the input it belongs to.
        embedding: the vector.
        object: ``"embedding"``.
    """

    index: int = 0
    embedding: tuple[float, ...] = ()
    object: str = "embedding"


@attrs.frozen
class EmbeddingList:
    """The vectors of one ``POST /embeddings`` call; iterating yields each ``Embedding``.

    Attributes:
        data: one embedding per input, in input order.
        model: the model that made them.
        object: ``"list"``.
        usage: token counts, when sent.
    """

    data: tuple[Embedding, ...] = ()
    model: str = ""
    object: str = "list"
    usage: Usage | None = None

    def __iter__(self) -> Iterator[Embedding]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def vectors(self) -> list[tuple[float, ...]]:
        """The vectors, in input order."""
        return [item.embedding for item in sorted(self.data, key=_index)]


def _index(item: Embedding) -> int:
    return item.index


@attrs.frozen
class RerankItem:
    """One document's place in a rerank.

    Attributes:
        index: the document's position in the ``documents`` you sent.
        relevance_score: how relevant it is to the query (higher is more relevant).
        document: the document's text, when the server returned it (both the plain
            string and the ``{"text": ...}`` form are read).
    """

    index: int
    relevance_score: float
    document: str | None = None


@attrs.frozen
class RerankResult:
    """The answer of a rerank; iterating yields each ``RerankItem``, most relevant first.

    Both response shapes are read: OpenAI/Jina's ``results`` and DashScope's
    ``output.results`` (with ``request_id`` as ``id``).

    Attributes:
        results: the documents ranked, by ``relevance_score`` from high to low (ties
            in input order); only the ``top_n`` best when ``top_n`` was sent.
        model: the model that ranked (the one asked for, when the server does not say).
        id: the answer's id (``request_id`` in DashScope's shape), "" when not sent.
        usage: token counts, when sent (DashScope sends ``total_tokens`` only).
    """

    results: tuple[RerankItem, ...] = ()
    model: str = ""
    id: str = ""
    usage: Usage | None = None

    def __iter__(self) -> Iterator[RerankItem]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def indices(self) -> list[int]:
        """The documents' input positions, most relevant first."""
        return [item.index for item in self.results]


@attrs.frozen
class Image:
    """One generated image: its bytes (sent as ``b64_json``) or its URL.

    Attributes:
        b64_json: the image, base64-encoded (the platform's default format).
        url: where to download the image (``response_format="url"``). Fetch it with
            any HTTP client: the SDK sends your key to the API's host only.
        revised_prompt: the prompt the model actually used, when it says so.
    """

    b64_json: str | None = attrs.field(default=None, repr=False)
    url: str | None = None
    revised_prompt: str | None = None

    @functools.cached_property
    def content(self) -> bytes | None:
        """The image's bytes, decoded from ``b64_json`` once (None for a URL).

        Line breaks, a ``data:...;base64,`` prefix and the URL-safe alphabet are
        accepted; anything else that is not base64 raises ``binascii.Error`` (the
        client checks this before it returns the images).
        """
        if self.b64_json is None:
            return None
        text = "".join(self.b64_json.split())
        if text.startswith("data:"):
            text = text.partition(",")[2]
        altchars = b"-_" if "-" in text or "_" in text else None
        return base64.b64decode(text, altchars=altchars, validate=True)


@attrs.frozen
class ImageList:
    """The images of one ``POST /images/generations``; iterating yields each ``Image``.

    Attributes:
        data: the images, in the server's order.
        created: when they were made, or None.
    """

    data: tuple[Image, ...] = ()
    created: datetime | None = None

    def __iter__(self) -> Iterator[Image]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)
