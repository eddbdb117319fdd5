"""RELIABILITY.md and the soak plot, written from the soak's results (benches/soak.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_SIDECARS = "tests/test_sync_sidecars.py::test_"
FAULTS = [
    (
        "three sidecars, one Redis / one PostgreSQL",
        "route on the first, feedback on the second, the same again on the third is "
        "`duplicate`; all three equal a one-process replay within 1e-9",
        _SIDECARS + "three_sidecars_count_each_signal_once_and_agree",
    ),
    (
        "`kill -9` under load (Redis, interval 0)",
        "feedback for queries routed before the crash applies after the restart; retries are "
        "`duplicate`; the restarted and the other replica equal the replay",
        _SIDECARS + "kill_9_under_load_loses_no_routed_query_and_counts_nothing_twice",
    ),
    (
        "Redis stopped under load",
        "`Route` keeps answering; `Track`/`RecordFeedback` `UNAVAILABLE` within 5 s with a "
        "message; everything works again after Redis returns, no restart; replicas agree",
        "tests/test_sync_outage_redis.py",
    ),
    (
        "PostgreSQL restarted (private cluster)",
        "the same, except that `Track`/`RecordFeedback` answer `UNAVAILABLE` within 12 s (a "
        "reconnect gives up only at the store's 10 s connect timeout)",
        "tests/test_sync_outage_postgres.py",
    ),
    (
        "restart on the SQLite default",
        "learning restored exactly (SIGTERM at 1 s; `kill -9` at interval 0)",
        _SIDECARS + "learning_survives_a_restart_on_the_sqlite_default",
    ),
    (
        "restart with a changed model catalogue",
        "remaining models keep their statistics; the new one starts fresh; both logged",
        _SIDECARS + "a_changed_catalogue_keeps_what_remains",
    ),
    (
        "snapshot written with other feature settings",
        "refused at start; the message says what to do; nothing deleted",
        _SIDECARS + "sidecar_refuses_a_snapshot_with_other_feature_settings",
    ),
    (
        "hostile input to every RPC (hypothesis, bounded)",
        "no `UNKNOWN`/`INTERNAL`, no NaN in statistics, earlier feedback intact",
        "tests/test_fuzz_rpcs.py",
    ),
    (
        "compaction, lagging replicas, catalogue change, lost publish acknowledgements",
        "exact state, bounded storage, removed models' statistics kept, retries appended once",
        "tests/test_sync_synchronizer.py, tests/test_sync_state_store.py",
    ),
]


def rss_summary(values: list[float]) -> dict[str, float]:
    """Drift = mean of the last minute against the first minute after warm-up (12 samples of
    5 s each); the peak is reported separately (compaction allocates transiently)."""
    head, tail = values[:12], values[-12:]
    first, last = sum(head) / len(head), sum(tail) / len(tail)
    ordered = sorted(values)
    return {
        "first_minute_mean": first,
        "last_minute_mean": last,
        "drift_pct": (last - first) / first * 100,
        "median": ordered[len(ordered) // 2],
        "min": ordered[0],
        "max": ordered[-1],
    }


def plot(samples: list[dict[str, Any]], warmup_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for k in ("A", "B"):
        top.plot(t, [s[f"rps_{k}"] for s in samples], label=f"replica {k}")
        bottom.plot(t, [s[f"rss_{k}_mb"] for s in samples], label=f"replica {k}")
    for ax in (top, bottom):
        ax.axvline(warmup_s / 60, color="grey", linestyle=":", label="end of warm-up")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    top.set_ylabel("requests / s")
    bottom.set_ylabel("resident memory (MiB)")
    bottom.set_xlabel("minutes")
    top.set_title("Soak: two replicas sharing Redis (Route + Track + 30% RecordFeedback)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    rss = result["rss_mb_after_warmup"]
    lag = result["sync_lag_s"]
    peak = {k: (v["max"] - v["median"]) / v["median"] * 100 for k, v in rss.items()}
    lines = [
        "# Reliability",
        "",
        "## Soak: two replicas sharing Redis",
        "",
        f"Command: `.venv/bin/python benches/soak.py --duration-s {args.duration_s:g} "
        f"--warmup-s {args.warmup_s:g} --threads {args.threads}` "
        "(own redis-server on loopback; two `conduit-sidecar serve` processes, sync interval "
        "1 s, TTL 60 s; closed-loop client threads: Route on either replica, Track on either, "
        "RecordFeedback on 30% of queries on either, 5% of those repeated on the other "
        "replica). Machine: 2 shared cores, also running the client and Redis.",
        "",
        "| measure | result |",
        "| --- | --- |",
        f"| duration | {result['duration_s']:g} s (warm-up {result['warmup_s']:g} s) |",
        f"| errors | {result['errors']} |",
        "| repeated feedback answered `duplicate` (counted once) | "
        f"{result['duplicates_counted_once']} |",
        f"| throughput after warm-up, replica A / B | {result['throughput_rps']['A']:.0f} / "
        f"{result['throughput_rps']['B']:.0f} requests/s |",
        *(
            f"| resident memory after warm-up, {k}: first minute -> last minute (drift); "
            f"median; min - max | {v['first_minute_mean']:.1f} -> {v['last_minute_mean']:.1f} MiB "
            f"({v['drift_pct']:+.1f}%); {v['median']:.1f}; {v['min']:.1f} - {v['max']:.1f} MiB |"
            for k, v in rss.items()
        ),
        f"| pending queries after warm-up, min - max | {result['pending_after_warmup']['min']} - "
        f"{result['pending_after_warmup']['max']} (bounded by the 60 s TTL) |",
        f"| sync lag (Update on one replica -> visible on the other), median / max | "
        f"{lag['median']:.2f} s / {lag['max']:.2f} s over {lag['probes']} probes "
        f"({lag['missed']} missed) |"
        if lag["median"] is not None
        else "| sync lag | no probe completed |",
        f"| replicas' learned statistics agree at the end (1e-9) | {result['replicas_agree']} |",
        f"| exit codes after SIGTERM | {result['exit_codes']} |",
        "",
        "Reading: memory has no growth trend (drift between the first and the last minute after "
        f"warm-up); the highest sample is {peak['A']:+.0f}% (A) and {peak['B']:+.0f}% (B) above "
        "the median. (Earlier runs showed a peak of up to +16% at every compaction, from folding "
        "in a worker thread, which allocates in its own malloc arena, and from reading "
        "16-delta pages; compaction now folds on the event loop one delta (about 1 ms) at a "
        "time and reads 4-delta pages.) "
        "Throughput swings come from "
        "other work sharing the machine's two cores; the two "
        "replicas track each other closely. Pending queries plateau once the 60 s TTL expires "
        "the oldest. The sync lag is at most about two 1 s intervals (publish tick + read "
        "tick) plus a round trip, as docs/OPERATIONS.md states.",
        "",
        "![throughput and memory over time](benches/results/soak.png)",
        "",
        "Raw samples (every 5 s): `benches/results/soak.json`.",
        "",
        "## Faults, tested with real processes",
        "",
        "Each line is a test in the suite (`bash scripts/test.sh`, or one file with "
        '`.venv/bin/pytest -q <file>` after `eval "$(bash scripts/services.sh)"`); design '
        'and limits in docs/OPERATIONS.md, "Scale-out and survival".',
        "",
        "| fault | expectation | test |",
        "| --- | --- | --- |",
        *(f"| {fault} | {expectation} | `{test}` |" for fault, expectation, test in FAULTS),
        "",
    ]
    (ROOT / "RELIABILITY.md").write_text("\n".join(lines))
