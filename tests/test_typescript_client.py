"""The Node 20 example client (examples/typescript/) against ``python -m worker serve``.

It submits a job, drops its first connection on purpose (``--drop-after``), reconnects with
``Last-Event-ID`` and backoff, checks the final state and prints the document, which must be the
simulator's, byte for byte. Skipped without Node 20+, unless ``REQUIRE_NODE=1`` (CI sets it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.pool_harness import PREFILL_MODEL, expected, spec
from tests.serve_fixtures import ServeFactory, write_serve_config
from tests.server_harness import TOKEN
from worker.simulator import SimulatorConfig, run_simulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLIENT = Path(__file__).resolve().parents[1] / "examples" / "typescript" / "client.mjs"


def node_binary() -> str:
    node = shutil.which("node")
    problem = "node is not installed"
    if node is not None:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
        major = int(version.strip().lstrip("v").split(".")[0] or 0)
        if major >= 20:
            return node
        problem = f"node {version.strip()} is older than 20"
    if os.environ.get("REQUIRE_NODE") == "1":
        pytest.fail(f"{problem}, and REQUIRE_NODE=1", pytrace=False)
    pytest.skip(problem)


async def test_the_node_client_reconnects_and_prints_the_document(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    node = node_binary()
    async with run_simulator(SimulatorConfig(tokens_per_second=300)) as sim:
        served = serve_process(
            write_serve_config(tmp_path, base_url=sim.base_url, extra="[server]\nretry_ms = 100\n"),
            "--workers",
            "1",
        )
        job = spec("ts-doc", tokens=1000)
        env = {**os.environ, "LONGFORM_URL": served.url, "LONGFORM_TOKEN": TOKEN}
        command = [node, str(CLIENT), job.messages[0].text, "--id", "ts-doc", "--model", PREFILL_MODEL]
        with anyio.fail_after(90):
            result = await anyio.run_process([*command, "--drop-after", "3"], env=env, check=False)
    errors = result.stderr.decode()
    assert result.returncode == 0, errors
    assert result.stdout.decode() == expected(job)
    assert "reconnecting with Last-Event-ID" in errors and "1 reconnect(s)" in errors, errors
