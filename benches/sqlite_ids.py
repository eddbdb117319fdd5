"""Why query ids are time-ordered (UUID v7): the SQLite store's group commit of buffered
decisions, timed with random (v4) ids against time-ordered (v7) ids.

    python benches/sqlite_ids.py [--rounds 3000] [--batch 10]

Each variant writes `rounds` groups of `batch` decisions through the store's own buffered
insert (`SqliteFeedbackStore._log_many`, one transaction and one fsync per group) into a fresh
file under /tmp, alternating v4, v7, v4, v7; printed: mean time per decision including the
commit. Random ids put every insert on a different page of the id index, so each group
dirties (and fsyncs) about one index page per decision; v7 ids share the rightmost pages.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from conduit_sidecar import Query, Router
from conduit_sidecar.feedback import SqliteFeedbackStore
from conduit_sidecar.feedback.stores.base import decision_to_json
from conduit_sidecar.query import new_query_id


def run(kind: str, path: Path, rounds: int, batch: int, text: str) -> float:
    store = SqliteFeedbackStore(path)
    conn = store._open()
    make = (lambda: uuid.uuid4().hex) if kind == "v4" else new_query_id
    spent = 0.0
    try:
        for _ in range(rounds):
            items = [(make(), text, None, 3600.0) for _ in range(batch)]
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            store._log_many(conn, items)
            conn.execute("COMMIT")
            spent += time.perf_counter() - started
    finally:
        conn.close()
    return spent / (rounds * batch)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    text = decision_to_json(Router().decide(Query(text="What is the capital of France?")))
    with tempfile.TemporaryDirectory() as tmp:
        for i, kind in enumerate(("v4", "v7", "v4", "v7")):
            per = run(kind, Path(tmp) / f"{i}-{kind}.db", args.rounds, args.batch, text)
            print(f"{kind} ids: {per * 1e6:6.1f} us per decision, groups of {args.batch}")


if __name__ == "__main__":
    asyncio.run(main())
