"""The calling thread's alternate signal stack, kept across OpenVINO's compile.

Compiling a model for the CPU installs an alternate signal stack (`sigaltstack`) on the calling thread, owned by the
compiled model, and freeing that model puts back the stack it found. Models are not freed in the order they were
compiled (a hot swap loads the new version, then unloads the old one), so the thread was left pointing at a freed
stack, and the next signal delivered to it (SIGTERM at shutdown) killed the process with a segmentation fault
instead of running its handler. Seen: the suite died in the test that sends itself SIGTERM, after a test that had
compiled two models. Putting the thread's own stack back right after the compile keeps OpenVINO's out of use; a
freed model then restores ours, which outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _sigaltstack() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        return ctypes.CDLL(None).sigaltstack  # libc's, in the process's global symbols (Linux, macOS)
    except (OSError, AttributeError):
        return None


def current_signal_stack() -> tuple[int, int, int]:
    """(address, flags, size) of the calling thread's alternate signal stack; (0, 0, 0) where none can be read."""
    call, stack = _sigaltstack(), _Stack()
    if call is None or call(None, ctypes.byref(stack)) != 0:
        return 0, 0, 0
    return stack.ss_sp or 0, stack.ss_flags, stack.ss_size


@contextlib.contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Whatever runs inside leaves the calling thread's alternate signal stack as it found it."""
    call, saved = _sigaltstack(), _Stack()
    if call is None or call(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        call(ctypes.byref(saved), None)
