"""The benchmark's smoke run: `saga-bench` starts its stack (authentication on), loads it, measures and reports
(a few seconds; the figures themselves come from `make bench`, never from a timed test)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = str(Path(sys.executable).parent / "saga-bench")


def test_the_benchmark_runs_end_to_end_and_reports(tmp_path):
    result = subprocess.run(
        [
            BENCH,
            "--scenarios",
            "closed-1x,open-100",
            "--duration",
            "3",
            "--baseline-duration",
            "3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sagas/s" in result.stdout and "baseline" in result.stdout
    (report,) = tmp_path.glob("bench-*.json")
    data = json.loads(report.read_text())
    assert data["baseline"]["sagas_per_s"] > 0
    assert [r["scenario"] for r in data["results"]] == ["closed-1x", "open-100"]
    for scenario in data["results"]:
        assert scenario["accepted"] > 0 and scenario["errors"] == {}
        assert scenario["completed"] == scenario["accepted"], "every accepted saga must finish"
        assert scenario["sagas_per_s"] > 0
        assert 0 < scenario["saga_ms"]["p50"] <= scenario["saga_ms"]["p99"] <= scenario["saga_ms"]["max"]
        assert scenario["rss_mib_start"] and scenario["rss_mib_end"]
        # Authentication was on: a POST without a token was refused, and the load's token was taken (no errors).
        assert scenario["unauthenticated_status"] == {"order_service": 401, "customer_service": 401}
        # CPU per saga of every process the saga runs on was found and measured.
        cpu = scenario["cpu_ms_per_saga"]
        assert set(cpu) == {"order_service", "customer_service", "postgresql", "rabbitmq", "load_generator"}
        assert all(ms > 0 for ms in cpu.values()), cpu
        assert scenario["cpu_processes"] == {"order_service": 1, "customer_service": 1, "postgresql": 1, "rabbitmq": 1}
    assert "postgres" in result.stdout and "rabbitmq" in result.stdout and "load gen" in result.stdout
