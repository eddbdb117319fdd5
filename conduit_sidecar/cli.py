"""`conduit-sidecar serve | stats | demo`.

conduit-sidecar serve                          # 127.0.0.1:50051, SQLite under $XDG_STATE_HOME
conduit-sidecar serve --store-url memory:// --metrics-port 9464
conduit-sidecar stats --target 127.0.0.1:50051 # a readable table from GetStats
conduit-sidecar demo --rounds 600              # a throwaway sidecar learning, live
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from .config import ConfigError, add_arguments, load_config
from .errors import ConduitError

log = logging.getLogger("conduit_sidecar.cli")


def _serve(args: argparse.Namespace) -> int:
    from .server import configure_logging, serve

    config = load_config(vars(args))
    configure_logging(config.json_logs, config.log_level)
    asyncio.run(serve(config))
    return 0


def format_stats(stats: object) -> str:
    """The GetStats table: one row per model, then pending queries and feedback counts."""
    from .client import SidecarStats

    assert isinstance(stats, SidecarStats)
    header = ("model", "selections", "share", "mean reward", "weight", "mean cost $", "mean lat s")
    total = sum(m.selections for m in stats.models.values()) or 1
    rows = [
        (
            m.model_id,
            str(m.selections),
            f"{100 * m.selections / total:.1f}%",
            f"{m.mean_reward:.3f}" if m.weight_sum > 0 else "-",
            f"{m.weight_sum:.1f}",
            f"{m.mean_cost_usd:.5f}" if m.outcomes else "-",
            f"{m.mean_latency_s:.2f}" if m.outcomes else "-",
        )
        for m in sorted(stats.models.values(), key=lambda m: (-m.selections, m.model_id))
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = ", ".join(f"{k}={v}" for k, v in sorted(stats.feedback_counts.items())) or "none"
    lines += [
        "",
        f"policy: {stats.policy} (version {stats.policy_version})",
        f"pending queries: {stats.pending_queries}",
        f"feedback: {counts}",
    ]
    return "\n".join(lines)


def _stats(args: argparse.Namespace) -> int:
    from .client import ConduitClient

    try:
        client = ConduitClient(args.target, token=args.token, timeout_s=args.timeout_s)
    except ValueError as exc:  # a bad --timeout-s: a usage error, not a traceback
        raise ConfigError(str(exc)) from None
    with client:
        print(format_stats(client.get_stats()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.rounds < 10:
        raise ConfigError(f"rounds: must be >= 10, got {args.rounds}")
    return asyncio.run(run_demo(rounds=args.rounds, seed=args.seed, policy=args.policy))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conduit-sidecar", description="Conduit: an online-learning LLM router over gRPC"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC sidecar until SIGTERM")
    add_arguments(serve)
    serve.set_defaults(run=_serve)

    stats = commands.add_parser("stats", help="print routing statistics of a running sidecar")
    stats.add_argument("--target", default=os.environ.get("CONDUIT_TARGET", "127.0.0.1:50051"))
    stats.add_argument("--token", default=os.environ.get("CONDUIT_TOKEN"))
    stats.add_argument("--timeout-s", type=float, default=5.0)
    stats.set_defaults(run=_stats)

    demo = commands.add_parser(
        "demo", help="start a throwaway sidecar and show it learning from simulated feedback"
    )
    demo.add_argument("--rounds", type=int, default=600)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--policy", default="linucb")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"conduit-sidecar: {exc}", file=sys.stderr)
        return 2
    except (ConduitError, OSError) as exc:
        print(f"conduit-sidecar: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
