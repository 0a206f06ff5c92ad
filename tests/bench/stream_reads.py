"""Benchmark: instructions the provider client's stream reader spends on one relayed read.

    python -m tests.bench.stream_reads [--format anthropic openai] [--reads 4000]

What :class:`controller.providers.base._Reader` does with one read of a relayed (same-format)
stream, alone: the SSE parse, the decoder's read and the chunk built, no socket, no generator,
no server. For each format, a stream is started (OpenAI: a role chunk; Anthropic:
``message_start`` and a text block), then ``--reads`` reads of one text event (a
``chat.completion.chunk`` with a piece of text, a ``text_delta``) are handed to the reader. The
script runs itself under valgrind's callgrind twice, with ``--reads`` reads and with none, and
prints the difference per read: a count that other work on the machine does not move, for A/B
comparisons of the reader (``tests.bench.streams --instructions`` counts the whole relay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _event(kind: str, name: bool, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, **fields} if name else fields)
    return (f"event: {kind}\n" if name else "").encode() + f"data: {data}\n\n".encode()


def _stream(kind: str) -> tuple[list[bytes], bytes]:
    """The reads that start a stream of ``kind``, and the text event read over and over."""
    if kind == "anthropic":
        message: dict[str, Any] = {"id": "m", "type": "message", "role": "assistant"}
        message |= {"model": "m-1", "content": [], "usage": {"input_tokens": 1}}
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": "t0000000000000000123 "}
        return [
            _event("message_start", True, message=message),
            _event("content_block_start", True, index=0, content_block=block),
            _event("content_block_delta", True, index=0, delta=delta),
        ], _event("content_block_delta", True, index=0, delta=delta)
    chunk: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "model": "m-1"}
    first = chunk | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    text = {"index": 0, "delta": {"content": "t0000000000000000123 "}, "finish_reason": None}
    return [_event("", False, **first)], _event("", False, **(chunk | {"choices": [text]}))


async def _read(kind: str, reads: int) -> None:
    from controller.providers import HttpProvider, Timeouts, codec_for
    from controller.providers._stream_reader import _Reader, _StreamLimits
    from controller.wire._relay import relay_for

    class Answer:
        headers: dict[str, str] = {}

    key = "sk-bench-provider-key-0123456789"
    codec = codec_for(kind)
    provider = HttpProvider(name="up", codec=codec, base_url="http://127.0.0.1:9", api_key=key)
    limits = _StreamLimits.starting(time.monotonic(), Timeouts())
    relay = relay_for(b"", starts=lambda event: False, secret=key)
    reader = _Reader(provider, Answer(), "m-1", limits, relay)  # type: ignore[arg-type]
    start, text = _stream(kind)
    for read in [*start, text]:
        reader.chunks(read)
    chunks = reader.chunks(text)
    if not chunks[0].text or chunks[0].raw != text:  # a text chunk, its event relayed as it came
        raise RuntimeError(f"the text event read as {chunks}")
    for _ in range(reads):
        reader.chunks(text)


def _count(kind: str, reads: int, tmp: Path) -> int:
    out = tmp / f"callgrind.{kind}.{reads}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    cmd += ["-m", "tests.bench.stream_reads", "--format", kind, "--reads", str(reads), "--inner"]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", log)
    if found is None:
        raise RuntimeError(f"no count from callgrind:\n{log[-2000:]}")
    return int(found.group(1))


def main(formats: list[str], reads: int) -> dict[str, float]:
    per_read: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stream-reads-") as where:
        for kind in formats:
            total = _count(kind, reads, Path(where))
            base = _count(kind, 0, Path(where))
            per_read[kind] = (total - base) / reads
            print(f"{kind}: {per_read[kind] / 1000:.1f} k instructions per read", flush=True)
    return per_read


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--format", nargs="+", default=["anthropic", "openai"])
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--inner", action="store_true", help="(internal) do the reads")
    args = parser.parse_args()
    if args.inner:
        asyncio.run(_read(args.format[0], args.reads))
    else:
        main(args.format, args.reads)


if __name__ == "__main__":
    cli()
