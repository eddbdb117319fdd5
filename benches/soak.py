"""Soak: mixed traffic against two sidecar replicas sharing one Redis, for a long time.

    .venv/bin/python benches/soak.py --duration-s 600          # the recorded run (>= 10 min)
    .venv/bin/python benches/soak.py --duration-s 30 --warmup-s 10 --no-report   # smoke

Starts its own redis-server (loopback, free port, temporary directory) and two
`conduit-sidecar serve` processes on it (sync interval 1 s, TTL 60 s). Client threads run a
closed loop of Route (replica A or B) -> Track (either replica) -> RecordFeedback on 30% of
queries (either replica; 5% of those sent again to the other replica, which must answer
`duplicate`). Every 5 s it samples per-replica throughput, resident memory (VmRSS), pending
queries and errors. The sync lag is probed with a model that normal traffic excludes: an
`Update` for it on one replica, then the time until the other replica's statistics show it.
At the end: replicas' learned statistics must agree (1e-9). Writes benches/results/soak.json,
benches/results/soak.png and RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from soak_report import plot, report, rss_summary  # noqa: E402

from conduit_sidecar._proto import conduit_pb2 as pb  # noqa: E402
from conduit_sidecar._proto import conduit_pb2_grpc as pb_grpc  # noqa: E402

_PORT = re.compile(r"serving conduit\.v1\.ConduitService on [\d.]+:(\d+)")
TEXTS = [
    "sort this list of numbers in python",
    "prove that the square root of two is irrational",
    "write a haiku about autumn rain",
    "summarise this contract clause for a layperson",
    "translate good morning into French",
    "explain the difference between TCP and UDP",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Replica:
    def __init__(self, name: str, redis_url: str, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conduit_sidecar", "serve", "--listen", "127.0.0.1:0",
             "--store-url", redis_url, "--sync-interval-s", "1", "--ttl-s", "60"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = _PORT.search(self.log_path.read_text())
            if match:
                self.target = f"127.0.0.1:{match.group(1)}"
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start")

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code


@dataclass
class Counters:
    ops: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    errors: list[str] = field(default_factory=list)
    duplicates_ok: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, replica: str, n: int = 1) -> None:
        with self.lock:
            self.ops[replica] += n


def thumbs(query_id: str, value: str) -> pb.RecordFeedbackRequest:
    payload = struct_pb2.Struct()
    payload.update({"value": value})
    return pb.RecordFeedbackRequest(query_id=query_id, signal_type="thumbs", payload=payload)


def worker(
    stubs: dict[str, Any], probe: str, stop: threading.Event, c: Counters, seed: int
) -> None:
    rng = random.Random(seed)
    names = list(stubs)
    while not stop.is_set():
        where = rng.choice(names)
        other = "B" if where == "A" else "A"
        try:
            text = f"{rng.choice(TEXTS)} #{rng.randrange(10**6)}"
            decision = stubs[where].Route(
                pb.RouteRequest(text=text, constraints=pb.Constraints(excluded_models=[probe])),
                timeout=10,
            )
            c.add(where)
            at = rng.choice(names)
            stubs[at].Track(
                pb.TrackRequest(
                    query_id=decision.query_id,
                    cost_usd=rng.uniform(0.0001, 0.02),
                    latency_s=rng.uniform(0.2, 3.0),
                ),
                timeout=10,
            )
            c.add(at)
            if rng.random() < 0.3:
                at = rng.choice(names)
                request = thumbs(decision.query_id, rng.choice(["up", "down"]))
                stubs[at].RecordFeedback(request, timeout=10)
                c.add(at)
                if rng.random() < 0.05:
                    again = stubs["B" if at == "A" else "A"].RecordFeedback(request, timeout=10)
                    c.add(other)
                    if not again.duplicate:
                        c.errors.append("duplicate feedback was applied twice")
                    else:
                        c.duplicates_ok += 1
        except grpc.RpcError as exc:
            c.errors.append(f"{exc.code()}: {exc.details()}")


def learned(stub: Any) -> dict[str, tuple[float, float]]:
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    return {m.model_id: (m.weight_sum, m.mean_reward) for m in stats.models}


def probe_lag(stubs: dict[str, Any], probe: str, src: str, dim: int) -> float | None:
    dst = "B" if src == "A" else "A"
    before = learned(stubs[dst]).get(probe, (0.0, 0.0))[0]
    features = [1.0] + [0.0] * (dim - 1)
    stubs[src].Update(
        pb.UpdateRequest(model_id=probe, cost_usd=0.001, quality_score=0.9, latency_s=0.5,
                         features=features, confidence=1.0),
        timeout=10,
    )  # fmt: skip
    sent = time.monotonic()
    while time.monotonic() - sent < 30:
        if learned(stubs[dst]).get(probe, (0.0, 0.0))[0] >= before + 1.0 - 1e-9:
            return time.monotonic() - sent
        time.sleep(0.02)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--warmup-s", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-report", action="store_true", help="do not write RELIABILITY.md")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite RELIABILITY.md from soak.json"
    )
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((ROOT / "benches" / "results" / "soak.json").read_text())
        args.duration_s, args.warmup_s, args.threads = (
            saved["duration_s"],
            saved["warmup_s"],
            saved["threads"],
        )
        report(saved, args)
        return 0
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="conduit-soak-"))
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    replicas = {"A": Replica("A", redis_url, workdir), "B": Replica("B", redis_url, workdir)}
    channels = {k: grpc.insecure_channel(r.target) for k, r in replicas.items()}
    stubs = {k: pb_grpc.ConduitServiceStub(ch) for k, ch in channels.items()}
    models = [m.id for m in stubs["A"].ListModels(pb.ListModelsRequest()).models]
    probe = models[-1]
    dim = len(stubs["A"].Route(pb.RouteRequest(text="dim", include_features=True)).features)

    counters = Counters()
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(stubs, probe, stop, counters, seed), daemon=True)
        for seed in range(args.threads)
    ]
    for t in threads:
        t.start()
    samples: list[dict[str, Any]] = []
    lags: list[float] = []
    missed_lags = 0
    started = time.monotonic()
    last_ops = dict(counters.ops)
    last_t = started
    next_probe = started + 10
    try:
        while time.monotonic() - started < args.duration_s:
            time.sleep(5.0)
            now = time.monotonic()
            ops = dict(counters.ops)
            sample = {"t_s": round(now - started, 1), "errors": len(counters.errors)}
            for k in ("A", "B"):
                sample[f"rps_{k}"] = (ops[k] - last_ops[k]) / (now - last_t)
                sample[f"rss_{k}_mb"] = rss_bytes(replicas[k].proc.pid) / 2**20
                sample[f"pending_{k}"] = (
                    stubs[k].GetStats(pb.GetStatsRequest(), timeout=10).pending_queries
                )
            samples.append(sample)
            last_ops, last_t = ops, now
            if now >= next_probe:
                lag = probe_lag(stubs, probe, "A" if len(lags) % 2 == 0 else "B", dim)
                if lag is None:
                    missed_lags += 1
                else:
                    lags.append(lag)
                next_probe = time.monotonic() + 15
            print(json.dumps(sample), flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    time.sleep(3.0)  # > 2 sync intervals: everything published has been merged
    a, b = learned(stubs["A"]), learned(stubs["B"])
    agree = a.keys() == b.keys() and all(
        abs(a[m][0] - b[m][0]) <= 1e-9 and abs(a[m][1] - b[m][1]) <= 1e-9 for m in a
    )
    for ch in channels.values():
        ch.close()
    exit_codes = {k: r.stop() for k, r in replicas.items()}
    redis.terminate()
    redis.wait(timeout=30)

    after = [s for s in samples if s["t_s"] >= args.warmup_s] or samples
    result: dict[str, Any] = {
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "threads": args.threads,
        "errors": len(counters.errors),
        "error_examples": counters.errors[:5],
        "duplicates_counted_once": counters.duplicates_ok,
        "replicas_agree": agree,
        "exit_codes": exit_codes,
        "throughput_rps": {k: sum(s[f"rps_{k}"] for s in after) / len(after) for k in ("A", "B")},
        "rss_mb_after_warmup": {k: rss_summary([s[f"rss_{k}_mb"] for s in after]) for k in "AB"},
        "pending_after_warmup": {
            "min": min(min(s["pending_A"], s["pending_B"]) for s in after),
            "max": max(max(s["pending_A"], s["pending_B"]) for s in after),
        },
        "pending_max": max(max(s["pending_A"], s["pending_B"]) for s in samples),
        "sync_lag_s": {
            "probes": len(lags),
            "missed": missed_lags,
            "median": sorted(lags)[len(lags) // 2] if lags else None,
            "max": max(lags) if lags else None,
        },
        "samples": samples,
    }
    out = ROOT / "benches" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    plot(samples, args.warmup_s, out / "soak.png")
    if not args.no_report:
        report(result, args)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    ok = result["errors"] == 0 and agree and all(c == 0 for c in exit_codes.values())
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"sidecar logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
