"""The control center's map page with a large registry, in headless Chromium: how soon it paints and how soon every
hazard is on the map.

    .venv/bin/python -m bench.map_paint --hazards 5000 --runs 5      # make bench-map

A registry (SQLite, the default) is filled with `--hazards` hazards spread over a city (straight through the
registry service, as the feed writes them: no drives), the real app serves it (its own Redis on a free port), and
Chromium (Debian's /usr/bin/chromium through Playwright) opens `/admin/map` signed in, `--runs` times. Per load:
first paint and first contentful paint (the Performance API's paint entries), and the moment every hazard is drawn:
the page says how many it drew (`data-drawn` on the map panel) and the bench waits for that to be `--hazards`, then
for the next frame. Times are milliseconds from the navigation's start. Writes bench/results/map_paint.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from app.services.registry.migrate import open_engine, upgrade
from app.services.registry.records import Sighting
from app.services.registry.store import HazardRegistry
from bench.jobs import Stack, redis_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
RESULTS = Path(__file__).resolve().parent / "results" / "map_paint.json"
PASSWORD = "bench-map-password"
LABELS = ("pothole", "crack", "manhole", "patch")
CITY = (13.10, 52.35, 13.70, 52.65)  # min_lon, min_lat, max_lon, max_lat: about 40 x 33 km of Berlin
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

DRAWN = """(expected) => Number(document.querySelector('.map-panel')?.dataset.drawn) === expected"""
NEXT_FRAME = """() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() =>
    done(performance.now()))))"""
PAINTS = """() => Object.fromEntries(performance.getEntriesByType('paint').map((e) => [e.name, e.startTime]))"""
MARKS = """() => Object.fromEntries(performance.getEntriesByType('mark').map((e) => [e.name, e.startTime]))"""
NAVIGATION = (
    """() => performance.getEntriesByType('navigation').map((e) => [e.responseEnd, e.domContentLoadedEventEnd])[0]"""
)
FETCHES = """() => performance.getEntriesByType('resource').filter((e) => e.name.includes('/admin/map/hazards'))
    .map((e) => ({start: e.startTime, end: e.responseEnd, bytes: e.encodedBodySize}))"""


async def fill_registry(url: str, count: int, seed: int = 1) -> None:
    """`count` open hazards at random places of CITY, one sighting each, through `HazardRegistry`."""
    engine = open_engine(url)
    try:
        await upgrade(engine)
        registry = HazardRegistry(engine)
        rng = random.Random(seed)
        for number in range(count):
            lon, lat = rng.uniform(CITY[0], CITY[2]), rng.uniform(CITY[1], CITY[3])
            at = START + timedelta(minutes=number)
            sighting = Sighting("local", f"bench-{number:06d}", rng.choice(LABELS), lat, lon, 2.0, at)
            await registry.apply_sighting(sighting)
    finally:
        await engine.dispose()


def measure(page: Page, base_url: str, count: int) -> dict[str, Any]:
    page.goto(f"{base_url}/admin/map")
    page.wait_for_function(DRAWN, arg=count, timeout=120_000, polling="raf")
    drawn = page.evaluate(NEXT_FRAME)
    paints = page.evaluate(PAINTS)
    fetches = page.evaluate(FETCHES)
    marks = page.evaluate(MARKS)
    html_ms, scripts_ms = page.evaluate(NAVIGATION)
    return {
        "first_paint_ms": round(paints.get("first-paint", -1), 1),
        "first_contentful_paint_ms": round(paints.get("first-contentful-paint", -1), 1),
        "all_drawn_ms": round(drawn, 1),
        "html_received_ms": round(html_ms, 1),
        "scripts_run_ms": round(scripts_ms, 1),  # DOMContentLoaded done: Leaflet and map.js have run
        "points_requested_ms": round(min(f["start"] for f in fetches), 1),
        "points_received_ms": round(max(f["end"] for f in fetches), 1),
        **{f"{name}_ms": round(at, 1) for name, at in marks.items()},
        "points_fetches": len(fetches),
        "points_fetch_ms": round(max(f["end"] for f in fetches) - min(f["start"] for f in fetches), 1),
        "points_bytes": sum(f["bytes"] for f in fetches),
    }


def run_browser(base_url: str, count: int, runs: int) -> list[dict[str, Any]]:
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{base_url}/admin/login?next=/admin/map")
        page.fill("#password", PASSWORD)
        page.press("#password", "Enter")
        page.wait_for_url(f"{base_url}/admin/map")
        measure(page, base_url, count)  # a warm-up load: the server's and the browser's caches, as an operator's
        loads = [measure(page, base_url, count) for _ in range(runs)]
        browser.close()
    return loads


def summary(loads: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("first_paint_ms", "first_contentful_paint_ms", "all_drawn_ms", "points_fetch_ms")
    return {f"median_{key}": round(statistics.median(load[key] for load in loads), 1) for key in keys} | {
        "max_all_drawn_ms": max(load["all_drawn_ms"] for load in loads)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hazards", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, redis_server() as redis_url:
        workdir = Path(scratch)
        registry_url = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
        started = time.monotonic()
        asyncio.run(fill_registry(registry_url, args.hazards))
        fill_s = time.monotonic() - started
        stack = Stack(redis_url, workdir)
        try:
            base_url = stack.api(REGISTRY_URL=registry_url, ADMIN_PASSWORD=PASSWORD)
            loads = run_browser(base_url, args.hazards, args.runs)
        finally:
            stack.stop()
    result = {
        "bench": "map_paint",
        "command": f"python -m bench.map_paint --hazards {args.hazards} --runs {args.runs}",
        "hazards": args.hazards,
        "fill_seconds": round(fill_s, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        **summary(loads),
        "loads": loads,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
