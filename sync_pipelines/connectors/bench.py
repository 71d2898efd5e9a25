"""Prints how fast each connector reads the sandbox, and what the engine's stats say about it:
`python -m sync_pipelines.connectors.bench --scale 10 [--error-rate 0.2]`."""

from __future__ import annotations

import argparse
import logging
import time

from sync_pipelines.connectors import TOOL_KINDS, connect
from sync_pipelines.sandbox import running_sandbox, sandbox_credentials
from sync_pipelines.stack import DEFAULT_STACK, load_stack

SANDBOX_CREDENTIALS = sandbox_credentials()
# the streams the sandbox stack reads from each tool of a kind the sandbox emulates under its own name
STREAMS = {name: tuple(dict.fromkeys(spec.reads or stream for stream, spec in tool.streams.items()))
           for name, tool in load_stack(DEFAULT_STACK).tools.items()
           if TOOL_KINDS[tool.kind].emulated and tool.streams and name == tool.kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=10)
    parser.add_argument("--error-rate", type=float, default=0.0, help="sandbox 5xx share for every tool")
    args = parser.parse_args()
    logging.getLogger("sync_pipelines.connectors").setLevel(logging.ERROR)  # retries are expected here
    print(f"{'tool/stream':<24} {'records':>8} {'pages':>6} {'requests':>8} {'retries':>7} {'seconds':>8} "
          f"{'records/s':>10} {'p95 ms':>7}")
    with running_sandbox(scale=args.scale, rate_limits=False) as sandbox:
        sandbox.set_faults(error_rate=args.error_rate)
        for tool, streams in STREAMS.items():
            for stream in streams:
                connector = connect(tool, sandbox.base_url(tool), SANDBOX_CREDENTIALS[tool], name=tool,
                                    backoff_base=0.01)
                started = time.perf_counter()
                count = sum(1 for _ in connector.read(stream))
                seconds = time.perf_counter() - started
                stats = connector.stats
                print(f"{tool + '/' + stream:<24} {count:>8,} {stats.pages:>6} {stats.requests:>8} "
                      f"{stats.retries:>7} {seconds:>8.2f} {count / seconds:>10,.0f} {stats.latency_p95_ms:>7.1f}")


if __name__ == "__main__":
    main()
