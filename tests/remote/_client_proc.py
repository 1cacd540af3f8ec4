"""A client process for the tests: threads and asyncio loops calling one RemoteBatcher at once.

``python -m tests.remote._client_proc URL NAME TAG`` sends unique items from 4 threads and 2 event
loops (in their own threads, 8 concurrent calls each) and prints one JSON line: how many calls
came back with their own item, and every one that did not.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

from microbatch.remote import RemoteBatcher

CALLS = 40


def main(url: str, name: str, tag: str) -> None:
    rb: RemoteBatcher[str, list[Any]] = RemoteBatcher(name, url=url, timeout=20)
    good: list[int] = []
    wrong: list[Any] = []

    def check(item: str, result: list[Any]) -> None:
        if result[0] == item:
            good.append(1)
        else:
            wrong.append([item, result])

    def thread_caller(k: int) -> None:
        for i in range(CALLS):
            item = f"{tag}-t{k}-{i}"
            check(item, rb(item))

    def loop_caller(k: int) -> None:
        async def one(j: int) -> None:
            for i in range(CALLS // 8):
                item = f"{tag}-l{k}-{j}-{i}"
                check(item, await rb.acall(item))

        async def run() -> None:
            await asyncio.gather(*(one(j) for j in range(8)))
            items = [f"{tag}-l{k}-map-{i}" for i in range(5)]
            for item, result in zip(items, await rb.amap(items), strict=True):
                check(item, result)

        asyncio.run(run())

    threads = [threading.Thread(target=thread_caller, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=loop_caller, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rb.close()
    print(json.dumps({"good": len(good), "wrong": wrong}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
