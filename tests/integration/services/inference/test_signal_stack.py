"""Compiling a model leaves the thread's alternate signal stack as it was, so models freed in any order (a hot swap
frees the older first) leave no signal to land on a freed stack: SIGTERM after that still reaches its handler."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from app.services.inference.model import load_model
from app.services.inference.signal_stack import current_signal_stack
from tests.conftest import MODEL_DIR

ROOT = Path(__file__).resolve().parents[4]


def test_a_compile_leaves_the_thread_s_signal_stack_as_it_found_it() -> None:
    before = current_signal_stack()
    model = load_model(MODEL_DIR, performance_hint="ADAPTIVE")
    assert current_signal_stack() == before
    del model
    assert current_signal_stack() == before


def test_sigterm_reaches_its_handler_after_models_freed_oldest_first() -> None:
    """In a process of its own: without the fix, the SIGTERM was a segmentation fault (exit -11), no handler ran."""
    script = textwrap.dedent(
        f"""
        import gc, os, signal
        from pathlib import Path
        from app.services.inference.model import load_model
        older = load_model(Path({str(MODEL_DIR)!r}), performance_hint="ADAPTIVE")
        newer = load_model(Path({str(MODEL_DIR)!r}), performance_hint="LATENCY", inference_precision="f32")
        del older  # the swap's order: the version loaded first goes first
        gc.collect()
        del newer
        gc.collect()
        signal.signal(signal.SIGTERM, lambda *_: print("handled SIGTERM", flush=True))
        os.kill(os.getpid(), signal.SIGTERM)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and "handled SIGTERM" in done.stdout, (done.returncode, done.stderr[-2000:])
