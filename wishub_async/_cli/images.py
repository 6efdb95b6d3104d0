"""``wishub images``: generate images from a prompt and save them."""

from __future__ import annotations

import argparse
import json
import mimetypes
from pathlib import Path
from typing import Any, TextIO

import anyio

from .._vision import sniff_image_type
from ..exceptions import ConfigurationError, WishubError
from ..models import ImageList
from .common import DEMO_MODEL, EXIT_OK, opened, report_error

__all__ = ["EXAMPLES", "SUMMARY", "add_arguments", "run"]

SUMMARY = "generate images from a prompt and save them (or print their URLs)"
EXAMPLES = """\
examples:
  wishub images "a red panda in the snow" --demo            saved as image.png
  wishub images "熊猫" --model Qwen-Image --host x6 -o panda.png --size "1024*1024"
  wishub images "a logo" --model ID -n 3 -o logo.png         logo-1.png ... logo-3.png
  wishub images "a logo" --model ID --url                    print the images' URLs

The size is sent as written (the platform documents it as height x width). Existing
files are not overwritten unless --force is given.
"""

_DEFAULT_STEM = "image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``wishub images``."""
    parser.add_argument("prompt", help="what to draw")
    parser.add_argument("--model", help="the image model (with --demo: the fake's first model)")
    parser.add_argument("--size", help="the size as the model takes it, such as 1024*1024")
    parser.add_argument("-n", type=int, metavar="N", help="how many images")
    parser.add_argument("--negative-prompt", metavar="TEXT", help="what to keep out")
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="the file to save to (with several images: PATH-1, PATH-2...); default image.png",
    )
    parser.add_argument("--url", action="store_true", help="ask for URLs and print them")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Generate, save (or print the URLs); 1 if the API failed."""
    model = args.model or (DEMO_MODEL if args.demo else None)
    if not model:
        raise ConfigurationError("images needs --model ID (see `wishub models`)")
    if not args.url and not args.force:
        _refuse_existing(_names(args.output, args.n or 1, ".png"))
    try:
        async with opened(args, err) as wh:
            images = await wh.images.generate(
                model=model,
                prompt=args.prompt,
                size=args.size,
                n=args.n,
                negative_prompt=args.negative_prompt,
                response_format="url" if args.url else None,
            )
    except WishubError as exc:
        return report_error(exc, err)
    files = await _save(images, args.output, force=args.force)
    if args.json:
        json.dump(_as_json(images, files), out, ensure_ascii=False, indent=2)
        out.write("\n")
        return EXIT_OK
    for image, file in zip(images, files, strict=True):
        print(file or image.url or "", file=out)
        if image.revised_prompt:
            print(f"revised prompt: {image.revised_prompt}", file=err)
    return EXIT_OK


def _names(output: str | None, count: int, suffix: str) -> list[Path]:
    """The files for ``count`` images: PATH, or PATH-1, PATH-2... for several."""
    path = Path(output) if output else Path(_DEFAULT_STEM + suffix)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{number}{path.suffix}") for number in range(1, count + 1)]


def _refuse_existing(paths: list[Path]) -> None:
    for path in paths:
        if path.exists():
            raise ConfigurationError(f"{path} exists; pass --force to overwrite it, or -o PATH")


async def _save(images: ImageList, output: str | None, *, force: bool) -> list[str | None]:
    """Write each image that came as bytes; the file names (None for a URL)."""
    files: list[str | None] = []
    for image, path in zip(images, _names(output, len(images), ""), strict=True):
        content = image.content
        if content is None:
            files.append(None)
            continue
        if not path.suffix:  # the default name: the suffix the image's type calls for
            kind = sniff_image_type(content) or "image/png"
            path = path.with_suffix(mimetypes.guess_extension(kind) or ".png")  # noqa: PLW2901
        try:
            async with await anyio.open_file(path, "wb" if force else "xb") as file:
                await file.write(content)
        except FileExistsError:
            raise ConfigurationError(f"{path} exists; pass --force to overwrite it") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from None
        files.append(str(path))
    return files


def _as_json(images: ImageList, files: list[str | None]) -> dict[str, Any]:
    return {
        "created": images.created.isoformat() if images.created else None,
        "images": [
            {"file": file, "url": image.url, "revised_prompt": image.revised_prompt}
            for image, file in zip(images, files, strict=True)
        ],
    }
