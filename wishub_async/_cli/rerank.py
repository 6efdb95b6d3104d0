"""``wishub rerank``: rank documents by relevance to a query."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from ..exceptions import ConfigurationError, WishubError
from ..models import RerankItem, RerankResult
from .common import DEMO_MODEL, EXIT_OK, opened, report_error
from .support import table

__all__ = ["EXAMPLES", "SUMMARY", "add_arguments", "run"]

SUMMARY = "rank documents by relevance to a query, most relevant first"
EXAMPLES = """\
examples:
  wishub rerank "pandas" "bamboo forests" "pandas eat bamboo" --demo
  wishub rerank "熊猫吃什么" --documents-file docs.txt --model BGE-Reranker-V2-m3 --host x6
  wishub rerank "refund policy" --documents-file - --top-n 3 --json < faq.txt
  wishub rerank "query" "doc one" "doc two" --model gte-rerank-v2 --host x6

The model picks the route: BGE rerankers /rerank, qwen3-rerank /reranks, gte-rerank-v2
DashScope's route at the host's root; any other model /rerank.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``wishub rerank``."""
    parser.add_argument("query", help="the query")
    parser.add_argument("documents", nargs="*", metavar="DOCUMENT", help="a text to rank")
    parser.add_argument(
        "--documents-file",
        metavar="PATH",
        help="more documents, one per line (blank lines skipped); - for stdin",
    )
    parser.add_argument("--model", help="the rerank model (with --demo: the fake's first model)")
    parser.add_argument("--top-n", type=int, metavar="N", help="show only the N best")


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Rank, print the documents best first; 1 if the API failed."""
    model = args.model or (DEMO_MODEL if args.demo else None)
    if not model:
        raise ConfigurationError("rerank needs --model ID (see `wishub models`)")
    documents = list(args.documents)
    if args.documents_file:
        documents += _read_documents(args.documents_file)
    if not documents:
        raise ConfigurationError("rerank needs documents: after the query, or --documents-file")
    try:
        async with opened(args, err) as wh:
            result = await wh.rerank.create(
                model=model, query=args.query, documents=documents, top_n=args.top_n
            )
    except WishubError as exc:
        return report_error(exc, err)
    if args.json:
        json.dump(_as_json(result), out, ensure_ascii=False, indent=2)
        out.write("\n")
        return EXIT_OK
    rows = [
        [f"{item.relevance_score:.4f}", str(item.index), _one_line(item, documents)]
        for item in result
    ]
    for line in table(["SCORE", "INDEX", "DOCUMENT"], rows):
        print(line, file=out)
    return EXIT_OK


def _read_documents(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"cannot read documents file {path}: {reason}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _one_line(item: RerankItem, documents: list[str]) -> str:
    """The document's text on one line (ours, when the server did not repeat it)."""
    text = item.document
    if text is None:
        text = documents[item.index] if 0 <= item.index < len(documents) else ""
    return " ".join(text.split())


def _as_json(result: RerankResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "id": result.id,
        "model": result.model,
        "results": [
            {
                "index": item.index,
                "relevance_score": item.relevance_score,
                "document": item.document,
            }
            for item in result
        ],
        "usage": None if usage is None else {"total_tokens": usage.total_tokens},
    }
