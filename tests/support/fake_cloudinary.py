"""A Cloudinary-compatible upload endpoint on loopback, for the real SDK (`upload_prefix=http://127.0.0.1:PORT`).

It checks signatures with the API secret like Cloudinary does, answers JSON shaped like Cloudinary's, keeps
what it stored, and can be switched to answer 200 ("ok"), 500 ("error"), never answer ("hang"), or close
its port ("refuse").
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast

from cloudinary.utils import api_sign_request

from tests.support.redis_process import free_port

Mode = Literal["ok", "error", "hang", "refuse"]
HANG_LIMIT_SECONDS = 30.0


@dataclass(frozen=True)
class Asset:
    public_id: str
    folder: str
    tags: list[str]
    data: bytes
    version: int


class FakeCloudinary:
    cloud_name = "hazard-test"
    api_key = "123456789012345"
    api_secret = "fake-api-secret"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host  # the rehearsal's hosts reach it on the machine's bridge address
        self.port = free_port()
        self.mode: Mode = "refuse"
        self.assets: dict[str, Asset] = {}
        self.upload_requests = 0  # every POST that reached the server, whatever it answered
        self.bad_signatures = 0
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """A CLOUDINARY_URL for this endpoint."""
        prefix = f"http://{self.host}:{self.port}"
        return f"cloudinary://{self.api_key}:{self.api_secret}@{self.cloud_name}?upload_prefix={prefix}"

    def answer(self, mode: Mode) -> None:
        """Switch behaviour; a hanging request is let go (without an answer) when leaving "hang"."""
        if mode != "hang":
            self._release.set()
        if mode == "refuse":
            self._close()
        elif self._server is None:
            self._open()
        if mode == "hang":
            self._release.clear()
        self.mode = mode

    def stop(self) -> None:
        self._release.set()
        self._close()

    def _open(self) -> None:
        server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="fake-cloudinary", daemon=True).start()
        self._server = server

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def store(self, fields: dict[str, str], data: bytes) -> tuple[Asset, bool]:
        """Keep an upload; with overwrite=0 an existing public id is answered as it is (Cloudinary's rule)."""
        folder = fields.get("folder", "")
        public_id = "/".join(part for part in (folder, fields["public_id"]) if part)
        with self._lock:
            existing = self.assets.get(public_id)
            if existing is not None and fields.get("overwrite") == "0":
                return existing, True
            tags = [tag for tag in fields.get("tags", "").split(",") if tag]
            asset = Asset(public_id, folder, tags, data, version=int(time.time()))
            self.assets[public_id] = asset
            return asset, False

    def asset_json(self, asset: Asset, existing: bool) -> dict[str, Any]:
        path = f"{self.cloud_name}/image/upload/v{asset.version}/{asset.public_id}.jpg"
        return {
            "asset_id": hashlib.md5(asset.public_id.encode()).hexdigest(),
            "public_id": asset.public_id,
            "version": asset.version,
            "signature": hashlib.sha1(asset.data).hexdigest(),
            "format": "jpg",
            "resource_type": "image",
            "type": "upload",
            "bytes": len(asset.data),
            "tags": asset.tags,
            "etag": hashlib.md5(asset.data).hexdigest(),
            "url": f"http://res.cloudinary.com/{path}",
            "secure_url": f"https://res.cloudinary.com/{path}",
            "asset_folder": asset.folder,
            "existing": existing,
        }


def _handler_for(fake: FakeCloudinary) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with fake._lock:
                fake.upload_requests += 1
            if not self._behave():
                return
            if self.path != f"/v1_1/{fake.cloud_name}/image/upload":
                self._reply(404, {"error": {"message": f"no route {self.path}"}})
                return
            fields, data = _parse_multipart(self.headers.get("Content-Type", ""), body)
            if not _signed_correctly(fields, fake.api_key, fake.api_secret):
                with fake._lock:
                    fake.bad_signatures += 1
                self._reply(401, {"error": {"message": "Invalid Signature"}})
                return
            asset, existing = fake.store(fields, data)
            self._reply(200, fake.asset_json(asset, existing))

        def do_GET(self) -> None:
            if not self._behave():
                return
            expected = base64.b64encode(f"{fake.api_key}:{fake.api_secret}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._reply(401, {"error": {"message": "Invalid credentials"}})
            elif self.path.split("?")[0] == f"/v1_1/{fake.cloud_name}/ping":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": {"message": f"no route {self.path}"}})

        def _behave(self) -> bool:
            """False when the mode means no normal answer (already sent a 500, or hung)."""
            if fake.mode == "hang":
                fake._release.wait(HANG_LIMIT_SECONDS)
                self.close_connection = True
                return False
            if fake.mode == "error":
                self._reply(500, {"error": {"message": "General Error"}})
                return False
            return True

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (its timeout) before the answer

    return Handler


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], bytes]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    data = b""
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition"))
        payload = cast(bytes, part.get_payload(decode=True))
        if name == "file":
            data = payload
        else:
            fields[name] = payload.decode()
    return fields, data


def _signed_correctly(fields: dict[str, str], api_key: str, api_secret: str) -> bool:
    if fields.get("api_key") != api_key:
        return False
    signed = {name: value for name, value in fields.items() if name not in ("api_key", "signature", "file")}
    expected = cast(str, api_sign_request(signed, api_secret))  # cloudinary is untyped
    return fields.get("signature") == expected
