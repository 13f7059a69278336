"""Latency of /detect while model versions are hot-swapped, against the same load without swaps.

    ADMIN_PASSWORD=... make run &
    ADMIN_PASSWORD=... .venv/bin/python -m bench.swap --rate 40 --seconds 30

Two open-loop runs at the same rate, back to back: one plain, one during which the active version flips
between FP16 and INT8 every `--swap-every` seconds through the admin API. Loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlparse

import httpx

from bench.common import road_frame
from bench.load import run_load

VERSIONS = ("best0408_int8_openvino_model", "best0408_openvino_model")


async def swap_forever(url: str, password: str, every: float, log: list[dict[str, object]]) -> None:
    async with httpx.AsyncClient(base_url=url, auth=("admin", password), timeout=60) as client:
        index = 0
        while True:
            await asyncio.sleep(every)
            version = VERSIONS[index % 2]
            started = asyncio.get_running_loop().time()
            response = await client.post(f"/admin/api/models/{version}/activate")
            log.append(
                {
                    "version": version,
                    "status": response.status_code,
                    "seconds": round(asyncio.get_running_loop().time() - started, 3),
                }
            )
            index += 1


async def load_with_swaps(url: str, rate: float, seconds: float, every: float, password: str) -> dict[str, object]:
    swaps: list[dict[str, object]] = []
    swapper = asyncio.create_task(swap_forever(url, password, every, swaps))
    try:
        result = await run_load(url, rate, seconds, road_frame())
    finally:
        swapper.cancel()
    async with httpx.AsyncClient(base_url=url, auth=("admin", password), timeout=60) as client:
        await client.post(f"/admin/api/models/{VERSIONS[1]}/activate")  # leave the default serving
    return {**result, "swaps": swaps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--swap-every", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/swap.json"))
    args = parser.parse_args()
    if (urlparse(args.url).hostname or "") not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("load tests target loopback only")
    password = os.environ["ADMIN_PASSWORD"]
    plain = asyncio.run(run_load(args.url, args.rate, args.seconds, road_frame()))
    swapping = asyncio.run(load_with_swaps(args.url, args.rate, args.seconds, args.swap_every, password))
    report = {"rate": args.rate, "seconds": args.seconds, "without_swaps": plain, "with_swaps": swapping}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
