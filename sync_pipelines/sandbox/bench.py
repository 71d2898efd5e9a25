"""Prints how long the sandbox takes to build and answer at several scales: `python -m sync_pipelines.sandbox.bench`."""

from __future__ import annotations

import argparse
import time
import tracemalloc

import requests

from .app import build_app
from .data import build_world, total_records
from .server import running_sandbox


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="1,30,300", help="comma-separated scales")
    args = parser.parse_args()
    print(f"{'scale':>6} {'records':>10} {'world s':>8} {'app s':>7} {'peak MB':>8} {'truth s':>8} {'2k page s':>9}")
    for scale in (float(s) for s in args.scales.split(",")):
        tracemalloc.start()
        world, world_s = _timed(lambda: build_world(42, scale))
        app, app_s = _timed(lambda: build_app(world=world, rate_limits=False))
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        _, truth_s = _timed(app.state.sandbox.truth_people)
        with running_sandbox(world=world, rate_limits=False) as sandbox:
            _, page_s = _timed(lambda: requests.get(
                f"{sandbox.url}/salesforce/services/data/v60.0/query", params={"q": "SELECT Id, Email FROM Contact"},
                headers={"Authorization": "Bearer sandbox-salesforce-token"}).json())
        print(f"{scale:>6g} {total_records(world):>10,} {world_s:>8.2f} {app_s:>7.2f} {peak_mb:>8.0f} "
              f"{truth_s:>8.2f} {page_s:>9.3f}")


if __name__ == "__main__":
    main()
