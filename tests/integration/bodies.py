"""Request bodies for transfer tests: odd-sized chunks, and a body that pauses midway."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

MiB = 1024 * 1024


async def stream(data: bytes, chunk: int = 65_537) -> AsyncIterator[bytes]:
    """``data`` in odd-sized chunks, as aiohttp hands them over."""
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


class PausingBody:
    """``2 * half_mib`` random MiB; after the first half it sets :attr:`half` and waits
    for :attr:`resume` (the test kills a server in between)."""

    def __init__(self, half_mib: int = 8) -> None:
        self.half_mib = half_mib
        self.size = 2 * half_mib * MiB
        self.half = asyncio.Event()
        self.resume = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.half_mib):
            yield os.urandom(MiB)
        self.half.set()
        await self.resume.wait()
        for _ in range(self.half_mib):
            yield os.urandom(MiB)
