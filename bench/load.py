"""Load a running server with concurrent clients and print a table of latencies and status codes.

    python -m bench.load --url http://127.0.0.1:8000 --token TOKEN --clients 8 --requests 300 \
        [--reads 0.5] [--duration 120]

The client is `tools.load`; `--reads` is the fraction of requests that read history instead of uploading.
"""

from __future__ import annotations

import argparse
import os

from tools.common import read_images
from tools.load import report, run_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", required=True, help="loopback base URL (repeat for several)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300, help="per client")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds at most")
    parser.add_argument("--reads", type=float, default=0.0, help="fraction of requests that read history")
    parser.add_argument("--images", type=int, default=64, help="distinct real X-rays to upload")
    parser.add_argument(
        "--token",
        default=os.environ.get("CXR_API_TOKEN"),
        help="API token (`flask --app app create-token NAME`); default: $CXR_API_TOKEN",
    )
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("the app answers anonymous requests 401: give --token (or set CXR_API_TOKEN)")
    run = run_load(
        args.url, read_images(args.images), args.clients, args.requests, args.duration, args.reads, token=args.token
    )
    print(report(run, f"{args.clients} clients against {', '.join(args.url)}"))
    for failure in run.failures()[:10]:
        print(f"  {failure.op} → {failure.status} {failure.error[:200]}")
    return 1 if run.failures() else 0


if __name__ == "__main__":
    raise SystemExit(main())
