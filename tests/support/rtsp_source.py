"""A real RTSP source on a free loopback port: Debian's GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0, driven
from the system Python's python3-gi; scripts/ensure-system-deps.sh installs both) serving one JPEG over and over as
an RTP/JPEG stream at `rtsp://127.0.0.1:<port>/drive`, as a fixed roadside camera would (ffmpeg alone cannot serve
RTSP for playback)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.support.redis_process import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
SERVE = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
port, jpeg, fps = sys.argv[1:4]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( multifilesrc location={jpeg} loop=true caps=image/jpeg,framerate={fps}/1 ! jpegparse ! rtpjpegpay name=pay0 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/drive", factory)
server.attach(None)
GLib.MainLoop().run()
"""


class RtspSource:
    def __init__(self, jpeg: Path, fps: int = 5) -> None:
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/drive"
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", SERVE, str(self.port), str(jpeg), str(fps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, within: float = 15.0) -> None:
        """Until it listens; at once (with its output) if it exits: Debian's packages missing, most likely."""
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise AssertionError(f"RTSP server exited (scripts/ensure-system-deps.sh installs it):\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"RTSP server not listening within {within} s"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout:
            self.process.stdout.close()
