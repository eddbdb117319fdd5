"""The spec's examples, kept as files under examples/, run as written.

Each runs as a subprocess once (exactly as a user would run it) and, where it exposes a
`main`, is also imported and driven against every feedback store backend.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from grpc_fixtures import Sidecar, sidecar

from conduit_sidecar import Query, Router
from conduit_sidecar.client import ConduitClient
from conduit_sidecar.feedback import FeedbackEvent
from tests.conftest import StoreFactory

__all__ = ["sidecar"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load(relative: str) -> ModuleType:
    path = EXAMPLES / relative
    name = "example_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses resolve their module's annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_file(relative: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / relative), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_runs() -> None:
    out = run_file("quickstart.py")
    assert "recorded thumbs-up: reward=1.0" in out


def test_production_feedback_runs_as_a_script(tmp_path: Path) -> None:
    out = run_file("production_feedback.py", "--store", "sqlite", "--path", str(tmp_path / "f.db"))
    assert "idempotency: second identical rating duplicate=True" in out
    assert "expected error: Unknown query_id 'not-tracked'" in out
    assert (tmp_path / "f.db").exists()


async def test_production_feedback_on_every_store(store_factory: StoreFactory) -> None:
    example = load("production_feedback.py")
    summary = await example.main(await store_factory.open())
    assert summary["duplicate"] is True
    assert summary["session_results"] == 2
    assert summary["pending"] == 2
    assert summary["adapters"] == ["conversion", "rating", "task_success", "thumbs"]
    # thumbs, rating, conversion on the first query and the session rating on both.
    assert [signal for _, signal in summary["recent"]] == [
        "rating",
        "rating",
        "conversion",
        "rating",
        "thumbs",
    ]
    # Bounded influence: the first query counts once at full weight whatever it received
    # (thumbs, rating, conversion, session rating), plus the pattern-2 update (1.0) and the
    # second turn, which only got the session rating (confidence 1.0 * 0.5).
    assert summary["total_weight"] == pytest.approx(1.0 + 1.0 + 0.5, abs=1e-12)


def test_feedback_loop_runs() -> None:
    out = run_file("feedback_loop.py")
    assert "cache hits:" in out


async def test_feedback_loop_moves_traffic_to_the_steady_model(
    store_factory: StoreFactory,
) -> None:
    example = load("feedback_loop.py")
    summary = await example.main(rounds=300, store=await store_factory.open())
    tail = summary["second_half"]
    assert max(tail, key=tail.get) == "steady-model"
    assert summary["cache_hits"] > 0
    assert summary["signal_counts"]["regeneration"] > 100
    assert summary["signal_counts"].get("retries", 0) > 0


async def test_fastapi_service_handlers_work_without_fastapi() -> None:
    example = load("integrations/fastapi_service.py")
    fastapi_installed = importlib.util.find_spec("fastapi") is not None
    assert (example.app is None) is not fastapi_installed
    collector, router = example.collector, example.router

    routed = await example.route_query(collector, router, "What is Python?", "s1")
    assert routed["selected_model"] in {m.id for m in router.models}
    assert await example.track_query(collector, routed["query_id"], 0.001, 0.5) == {
        "status": "tracked",
        "query_id": routed["query_id"],
    }
    ok = await example.submit_feedback(collector, routed["query_id"], "thumbs", {"value": "up"})
    assert ok == {"status": "recorded", "reward": 1.0}
    again = await example.submit_feedback(collector, routed["query_id"], "thumbs", {"value": "up"})
    assert again == ok  # idempotent: the first result

    for query_id, signal_type, payload in [
        ("unknown-id", "thumbs", {"value": "up"}),
        (routed["query_id"], "rating", {"rating": 5}),  # not registered in this service
        (routed["query_id"], "thumbs", {"value": 3}),
    ]:
        with pytest.raises(example.HTTPError) as info:
            await example.submit_feedback(collector, query_id, signal_type, payload)
        assert info.value.status_code == 404
    with pytest.raises(example.HTTPError) as info:
        await example.track_query(collector, "unknown-id", 0.001)
    assert info.value.status_code == 404


def test_fastapi_service_demo_runs() -> None:
    out = run_file("integrations/fastapi_service.py")
    assert "{'status': 'recorded', 'reward': 1.0}" in out
    assert "404 Unknown query_id 'unknown-id'" in out


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)


async def test_sidecar_doc_client_example_runs_against_a_sidecar(sidecar: Sidecar) -> None:
    """docs/SIDECAR.md's Python client example, as written, against a real sidecar (only the
    address is the test's). Its statements are top-level awaits, so they run as the body
    of a coroutine."""
    block = python_blocks(ROOT / "docs" / "SIDECAR.md")[0]
    assert '"127.0.0.1:50051"' in block
    imports, _, body = block.replace('"127.0.0.1:50051"', repr(sidecar.target)).partition("\n\n")
    body = textwrap.indent(body + "return decision\n", "    ")
    source = f"{imports}\n\nasync def example():\n{body}"
    namespace: dict[str, Any] = {}
    exec(compile(source, "docs/SIDECAR.md", "exec"), namespace)
    decision = await namespace["example"]()
    with ConduitClient(sidecar.target) as client:  # the example's thumbs-up reached the sidecar
        again = client.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    assert again.duplicate and again.reward == 1.0


def test_sidecar_doc_custom_adapter_script_serves_the_adapter(tmp_path: Path) -> None:
    """docs/SIDECAR.md's "Custom adapters" script, as written, runs a sidecar whose clients
    can record the custom signal type, and stops cleanly on SIGTERM."""
    blocks = python_blocks(ROOT / "docs" / "SIDECAR.md")
    (script,) = [b for b in blocks if "class ConversionAdapter" in b]
    path = tmp_path / "my_sidecar.py"
    path.write_text(script, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env.update(PYTHONPATH=str(ROOT), CONDUIT_LISTEN="127.0.0.1:0", CONDUIT_STORE_URL="memory://")
    with subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    ) as proc:  # closes its stdout on the way out
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the script's first output, once it serves
            match = re.fullmatch(r"serving on port (\d+)\n", line)
            assert match, line
            with ConduitClient(f"127.0.0.1:{match.group(1)}") as client:
                decision = client.route(Query(text="Which plan should I buy?"))
                client.track(decision, cost=0.001, latency=0.5)
                result = client.record(
                    FeedbackEvent(decision.query_id, "conversion", {"converted": False})
                )
            assert (result.signal_type, result.reward) == ("conversion", 0.3)
            assert not result.duplicate
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_readme_python_example_runs(tmp_path: Path) -> None:
    (script,) = python_blocks(ROOT / "README.md")
    path = tmp_path / "readme_example.py"
    path.write_text(script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=90, env=env
    )
    assert done.returncode == 0, done.stderr
    model, reward = done.stdout.split()
    assert model in {spec.id for spec in Router().models}
    assert reward == "1.0"
