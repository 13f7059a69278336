"""ModelRegistry (app/services/inference/registry.py): versions found in the repository, their states, hot-swap.
The engines are stand-ins (the registry only hands engines around and asks them how busy they are); the real model
under the registry is tests/integration/services/fleet's and the API tests'."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
from structlog.testing import capture_logs

from app.services.core.errors import ModelActive, ModelMemoryLimit, ModelNotFound, ModelNotLoaded, ModelNotReady
from app.services.inference.registry import ModelRegistry, ModelState
from app.services.inference.types import ModelLoadError, PoolStats

if TYPE_CHECKING:
    from app.services.inference.engine import DetectionEngine

WITHIN_SECONDS = 5.0


class StandInEngine:
    """What the registry asks of an engine: its name and version, how many frames are inside it."""

    def __init__(self, name: str) -> None:
        self.info = SimpleNamespace(name=name, version="1")
        self.compile_seconds = 0.0
        self.in_flight = 0

    def stats(self) -> PoolStats:
        return PoolStats(size=1, queued=0, in_flight=self.in_flight, rejected=0, expired=0, completed=0)


def version_folder(repository: Path, name: str) -> Path:
    folder = repository / name
    folder.mkdir(parents=True)
    (folder / "metadata.yaml").write_text("names: {0: pothole}\n")
    (folder / "model.xml").write_text("<net/>")
    (folder / "model.bin").write_bytes(b"\0" * 1024)
    return folder


class Repository:
    """A registry over two versions, v1 (the default) and v2, with stand-in engines and a verdict per version."""

    def __init__(self, tmp_path: Path, *, drain_seconds: float = WITHIN_SECONDS, memory_limit_mb: float = 1e9) -> None:
        root = tmp_path / "models"
        default = version_folder(root, "v1")
        version_folder(root, "v2")
        self.engines: dict[str, StandInEngine] = {}
        self.broken: dict[str, str] = {}  # version -> why its check fails
        self.registry = ModelRegistry(
            root, default, self.build, self.verify, memory_limit_mb=memory_limit_mb, drain_seconds=drain_seconds
        )

    def build(self, path: Path, name: str) -> DetectionEngine:
        self.engines[name] = StandInEngine(name)
        return cast("DetectionEngine", self.engines[name])

    async def verify(self, engine: DetectionEngine) -> None:
        reason = self.broken.get(engine.info.name)
        if reason is not None:
            raise ModelLoadError(reason)


async def wait_for_state(registry: ModelRegistry, name: str, state: ModelState) -> None:
    deadline = time.monotonic() + WITHIN_SECONDS
    while registry.version(name).state is not state:
        assert time.monotonic() < deadline, f"{name} never became {state}: {registry.version(name).state}"
        await asyncio.sleep(0.005)


async def test_every_version_folder_is_found_unloaded_and_nothing_serves_before_an_activation(tmp_path: Path) -> None:
    registry = Repository(tmp_path).registry
    assert [v["name"] for v in registry.describe()] == ["v1", "v2"]
    assert {registry.version(name).state for name in ("v1", "v2")} == {ModelState.UNLOADED}
    with pytest.raises(ModelNotReady):
        registry.engine_for(None)
    with pytest.raises(ModelNotLoaded):
        registry.engine_for("v2")
    with pytest.raises(ModelNotFound):
        registry.version("v3")


async def test_a_second_activation_swaps_and_unloads_the_first(tmp_path: Path) -> None:
    models = Repository(tmp_path)
    registry = models.registry
    await registry.activate("v1")
    assert registry.active == "v1" and registry.engine_for(None) is cast(object, models.engines["v1"])
    assert registry.loaded() == ["v1"]

    await registry.activate("v2")

    assert registry.active == "v2" and registry.engine_for(None) is cast(object, models.engines["v2"])
    assert registry.version("v1").state is ModelState.UNLOADED and registry.version("v1").engine is None
    assert registry.loaded() == ["v2"]


async def test_the_active_version_cannot_be_unloaded(tmp_path: Path) -> None:
    registry = Repository(tmp_path).registry
    await registry.activate("v1")
    with pytest.raises(ModelActive):
        await registry.unload("v1")
    assert registry.version("v1").state is ModelState.AVAILABLE and registry.active == "v1"


async def test_a_version_that_fails_its_check_is_failed_with_the_reason_logged_and_the_active_one_serves_on(
    tmp_path: Path,
) -> None:
    models = Repository(tmp_path)
    registry = models.registry
    await registry.activate("v1")
    models.broken["v2"] = "probe frame found nothing"

    with capture_logs() as logs, pytest.raises(ModelLoadError):
        await registry.activate("v2")

    failed = registry.version("v2")
    assert failed.state is ModelState.FAILED and failed.reason == "probe frame found nothing" and failed.engine is None
    assert {"event": "model_load_failed", "model": "v2", "reason": "probe frame found nothing"}.items() <= next(
        entry for entry in logs if entry["event"] == "model_load_failed"
    ).items()
    assert registry.active == "v1" and registry.engine_for(None) is cast(object, models.engines["v1"])
    # A failed version unloads to a clean state, and loads once it is fixed.
    await registry.unload("v2")
    assert registry.version("v2").state is ModelState.UNLOADED and registry.version("v2").reason is None
    del models.broken["v2"]
    assert (await registry.load("v2")).state is ModelState.AVAILABLE


async def test_a_version_that_would_pass_the_memory_limit_is_refused_before_it_is_built(tmp_path: Path) -> None:
    models = Repository(tmp_path, memory_limit_mb=1.0)
    with pytest.raises(ModelMemoryLimit):
        await models.registry.load("v2")
    version = models.registry.version("v2")
    assert version.state is ModelState.FAILED and version.reason and "MODEL_MEMORY_LIMIT_MB" in version.reason
    assert "v2" not in models.engines


async def test_unload_waits_for_the_frames_inside_the_engine(tmp_path: Path) -> None:
    models = Repository(tmp_path)
    registry = models.registry
    await registry.activate("v1")
    models.engines["v1"].in_flight = 1  # a frame admitted on v1 is still running

    swapping = asyncio.create_task(registry.activate("v2"))
    await wait_for_state(registry, "v1", ModelState.UNLOADING)
    assert registry.active == "v2"  # new frames go to v2 at once ...
    assert registry.version("v1").engine is cast(object, models.engines["v1"])  # ... while v1 finishes its own
    assert not swapping.done()

    models.engines["v1"].in_flight = 0
    await asyncio.wait_for(swapping, WITHIN_SECONDS)
    assert registry.version("v1").state is ModelState.UNLOADED and registry.version("v1").engine is None


async def test_unload_gives_up_on_a_drain_past_its_bound_and_logs_it(tmp_path: Path) -> None:
    models = Repository(tmp_path, drain_seconds=0.05)
    registry = models.registry
    await registry.load("v2")
    models.engines["v2"].in_flight = 1  # a frame that never finishes

    with capture_logs() as logs:
        await asyncio.wait_for(registry.unload("v2"), WITHIN_SECONDS)

    assert registry.version("v2").state is ModelState.UNLOADED
    assert [entry["model"] for entry in logs if entry["event"] == "model_drain_timed_out"] == ["v2"]
