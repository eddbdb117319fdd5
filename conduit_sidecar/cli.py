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
from .errors import ConduitError, Unavailable

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

    roots = None
    if args.root_cert is not None:
        try:
            with open(args.root_cert, "rb") as handle:
                roots = handle.read()
        except OSError as exc:
            raise ConfigError(
                f"root_cert: cannot read {args.root_cert!r}: {exc.strerror}"
            ) from None
        if b"-----BEGIN CERTIFICATE-----" not in roots:
            raise ConfigError(f"root_cert: {args.root_cert!r} holds no PEM certificate")
    tls = args.tls or roots is not None
    try:
        client = ConduitClient(
            args.target,
            token=args.token,
            timeout_s=args.timeout_s,
            root_certificates=roots,
            tls=tls,
        )
    except ValueError as exc:  # a bad --timeout-s or --root-cert: a usage error
        raise ConfigError(str(exc)) from None
    with client:
        try:
            stats = client.get_stats()
        except Unavailable as exc:
            # A plaintext call to a TLS port fails with a bare "Socket closed": say what to try.
            hint = "" if tls else "; if it serves TLS, pass --root-cert (or --tls)"
            raise Unavailable(f"{exc} (is a sidecar listening on {args.target}?{hint})") from None
    print(format_stats(stats))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.rounds < 10:
        raise ConfigError(f"rounds: must be >= 10, got {args.rounds}")
    return asyncio.run(run_demo(rounds=args.rounds, seed=args.seed, policy=args.policy))


def one_line(message: str) -> str:
    """A multi-line message (a YAML parser's: context, problem, the quoted source line and a
    caret under it) as one line of the log."""
    lines = (line.strip() for line in message.splitlines())
    return " ".join(line for line in lines if line and set(line) != {"^"})


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
    stats.add_argument("--tls", action="store_true", help="the sidecar serves TLS")
    stats.add_argument(
        "--root-cert",
        metavar="PEM",
        help="certificate(s) to trust, e.g. the sidecar's self-signed tls_cert (implies --tls)",
    )
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
    # grpc's C core reads this once, when grpc is first imported (nothing imported it yet):
    # without it, grpcio logs a plain-text INFO line per failed TLS handshake, one per
    # reconnection attempt of a misconfigured client, into a log that may be JSON. Errors
    # still show; GRPC_VERBOSITY=INFO or DEBUG in the environment brings the rest back.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        # A closed pipe shows here, where it is handled below, and not in the interpreter's
        # flush at exit (stdout to a pipe is block-buffered: print() alone seldom fails).
        sys.stdout.flush()
    except ConfigError as exc:
        print(f"conduit-sidecar: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`stats | head`): stop quietly, as tools killed by SIGPIPE do
        # (exit status 128 + 13), and point stdout at /dev/null so the interpreter's final
        # flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ConduitError, OSError) as exc:
        print(f"conduit-sidecar: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
