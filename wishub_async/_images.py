"""``wh.images``: images generated from a prompt (``POST /images/generations``)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any, Literal

from ._context import Send
from ._converter import structure_json
from ._http import Request
from ._resources import request_body
from ._text import excerpt
from .exceptions import InvalidRequestError, ResponseValidationError
from .models import ImageList

__all__ = ["Images"]


class Images:
    """``wh.images``: image generation."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def generate(
        self,
        *,
        model: str,
        prompt: str,
        size: str | None = None,
        n: int | None = None,
        negative_prompt: str | None = None,
        response_format: Literal["b64_json", "url"] | None = None,
        style: str | None = None,
        num_inference_steps: int | None = None,
        user: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> ImageList:
        """``POST /images/generations``: ``n`` images for ``prompt``.

        Parameters left out (or None) are not sent; the platform's defaults apply
        (one image, ``b64_json``).

        Args:
            model: the image model's name or id.
            prompt: what to draw (the platform takes up to 1000 characters).
            size: the size, sent exactly as written: the platform documents it as
                height x width (such as ``"1024*1024"`` or ``"768x1024"``).
            n: how many images.
            negative_prompt: what to keep out of the image.
            response_format: ``"b64_json"`` (the platform's default: the bytes come
                back, decoded as ``Image.content``) or ``"url"``.
            style: a style the model knows (``standard``, ``portrait``,
                ``landscape``, ``cartoon``, ``technology``, ``photography``,
                ``concept``).
            num_inference_steps: denoising steps, for models that take them.
            user: an end-user id for the platform's abuse monitoring.
            extra_body: more JSON fields, merged in last.
            **extra: other parameters (``seed``...), sent as they are.

        Raises:
            APIError: the server refused.
            APIConnectionError: no answer arrived (after the retries).
            ResponseValidationError: the answer was not a list of images, or an
                image's ``b64_json`` was not base64.
            InvalidRequestError: ``prompt`` is not a string.
        """
        if not isinstance(prompt, str):
            raise InvalidRequestError(f"prompt= must be a str, not {type(prompt).__name__}")
        optional = {
            "size": size,
            "n": n,
            "negative_prompt": negative_prompt,
            "response_format": response_format,
            "style": style,
            "num_inference_steps": num_inference_steps,
            "user": user,
            **extra,
        }
        body = request_body({"model": model, "prompt": prompt}, optional, extra_body)
        request = Request("POST", "/images/generations", json=body, model=model)
        response = await self._send(request)
        images = structure_json(response.content, ImageList)
        for index, image in enumerate(images.data):
            try:
                image.content  # noqa: B018 - decoded (and cached) now, so bad base64 fails here
            except (binascii.Error, ValueError) as exc:
                raise ResponseValidationError(
                    f"response does not fit ImageList: b64_json is not base64 ({exc})",
                    path=f"$.data[{index}].b64_json",
                    body_excerpt=excerpt(response.content),
                ) from exc
        return images
