"""``wishub chat``: ask a model one question and print its answer."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from .._vision import image_part, user_message
from ..exceptions import ConfigurationError, InvalidRequestError, WishubError
from ..models import ChatCompletion
from .common import DEMO_MODEL, EXIT_API_ERROR, EXIT_OK, describe_error, opened

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "ask a model one question and print its answer (reasoning goes to stderr)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``wishub chat``."""
    parser.add_argument("prompt", help="the question (the user message)")
    parser.add_argument("--model", help="the model id (with --demo: the fake's first model)")
    parser.add_argument("--system", help="a system message to send first")
    parser.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    parser.add_argument("--max-tokens", type=int, help="the longest answer, in tokens")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="FILE_OR_URL",
        help="an image to send with the question (vision models); repeat for several",
    )


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Ask, print the answer; 1 if the API failed."""
    model = args.model or (DEMO_MODEL if args.demo else None)
    if not model:
        raise ConfigurationError("chat needs --model ID (see `wishub models`)")
    messages = _messages(args)
    params: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    try:
        async with opened(args, err) as wh:
            if not args.stream:
                answer = await wh.chat.completions.create(model=model, messages=messages, **params)
                _print_answer(answer, args.json, out, err)
                return EXIT_OK
            stream = await wh.chat.completions.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **params,
            )
            async with stream:
                async for chunk in stream:
                    if not args.json:
                        _write(err, chunk.reasoning)
                        _write(out, chunk.text)
                if args.json:
                    _print_answer(stream.completion, True, out, err)  # noqa: FBT003
                else:
                    out.write("\n")
    except WishubError as exc:
        if not isinstance(exc, ConfigurationError):
            print(f"wishub: {describe_error(exc)}", file=err)
            return EXIT_API_ERROR
        raise
    return EXIT_OK


def _messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The system message (if any), then the question with its images (if any)."""
    question: dict[str, Any] = {"role": "user", "content": args.prompt}
    if args.image:
        try:
            question = dict(user_message(args.prompt, *map(image_part, args.image)))
        except InvalidRequestError as exc:
            raise ConfigurationError(str(exc)) from None
    system = [{"role": "system", "content": args.system}] if args.system else []
    return [*system, question]


def _write(stream: TextIO, text: str) -> None:
    if text:
        stream.write(text)
        stream.flush()


def _print_answer(answer: ChatCompletion, as_json: bool, out: TextIO, err: TextIO) -> None:
    if as_json:
        json.dump(_completion_json(answer), out, ensure_ascii=False, indent=2)
    else:
        if answer.reasoning:
            print(answer.reasoning, file=err)
        out.write(answer.text)
    out.write("\n")


def _completion_json(answer: ChatCompletion) -> dict[str, Any]:
    usage = answer.usage
    return {
        "id": answer.id,
        "model": answer.model,
        "content": answer.text,
        "reasoning_content": answer.choices[0].message.reasoning_content
        if answer.choices
        else None,
        "finish_reason": answer.choices[0].finish_reason if answer.choices else None,
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }
