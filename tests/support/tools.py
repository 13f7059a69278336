"""Programs the suite runs from Debian packages that scripts/ensure-system-deps.sh unpacks (never installs: their
postinst would start a daemon on a default port) into var/tools/<package>."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TOOLS = ROOT / "var" / "tools"


def debian_tool(package: str, name: str) -> str:
    """`name` on the PATH, or where ensure-system-deps.sh unpacked Debian's `package`."""
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS / package / "usr" / "bin"))
    if found is None:
        raise RuntimeError(f"{name} is not installed; `make system-deps` unpacks Debian's {package} package")
    return found


def stop_tool(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
