"""Debian's prometheus and promtool (unpacked by scripts/ensure-system-deps.sh), and a private Prometheus server on a
free port with its own configuration and data directory, as the suite starts Redis."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.redis_process import free_port
from tests.support.tools import debian_tool, stop_tool


def prometheus_binary(name: str) -> str:
    """`prometheus` or `promtool`: on the PATH, or where ensure-system-deps.sh unpacked Debian's package."""
    return debian_tool("prometheus", name)


class PrometheusServer:
    """Scrapes `jobs` (job name -> host:port targets) every second and evaluates `rule_files` every second."""

    def __init__(self, directory: Path, jobs: dict[str, list[str]], rule_files: list[Path]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
            ],
        }
        config_path = directory / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        self.log = self.log_path.open("wb")
        command = [
            prometheus_binary("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while True:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"prometheus not ready within {within} s:\n{self.log_path.read_text()}"
            try:
                if httpx.get(f"{self.base_url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def wait_scraping(self, within: float = 20.0) -> None:
        """Until every target has answered a scrape (Prometheus hands new targets to its scrapers in batches)."""
        deadline = time.monotonic() + within
        while True:
            targets = self.api("targets")["activeTargets"]
            if targets and all(target["health"] == "up" for target in targets):
                return
            assert time.monotonic() < deadline, f"targets not all up within {within} s: {targets}"
            time.sleep(0.2)

    def wait_next_scrape(self, within: float = 10.0) -> None:
        """Until every target has been scraped after this call: what happened before is in Prometheus."""
        mark = time.time()
        deadline = time.monotonic() + within
        while True:
            scraped_at = [float(sample["value"][1]) for sample in self.query("timestamp(up)")]
            if scraped_at and min(scraped_at) > mark:
                return
            assert time.monotonic() < deadline, f"no scrape of every target within {within} s"
            time.sleep(0.1)

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.base_url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {response.status_code} {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (an error, e.g. a parse error, fails the caller)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        stop_tool(self.process)
        self.log.close()
