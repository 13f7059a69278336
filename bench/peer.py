"""The naive peer: the service a user would write instead, to measure ours against (docs/PERFORMANCE.md).

    make bench-peer                      # builds .venv-train, serves this, runs bench.load --suite against both
    .venv-train/bin/python -m bench.peer --port 8001 --model-dir models/best0408_openvino_model

FastAPI around Ultralytics' `YOLO(model_dir).predict` on the same OpenVINO IR at the same input size, the way the
Ultralytics docs and most tutorials put it: an `async def` route that decodes the upload with Pillow and calls
`predict` inline. It runs from the `train` environment (`.venv-train`, torch + ultralytics), never from the
service's: torch and ultralytics are not dependencies of the service. It answers the same two routes the load
generator uses: `POST /sessions` (a stub: the peer has no sessions) and `POST /detect/{session_id}` with a raw
image body; `GET /health/ready` names the model, as ours does.
"""

from __future__ import annotations

import argparse
import io
import os
import uuid
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request
from PIL import Image

MODEL_DIR = Path("models/best0408_openvino_model")


def pin_precision(precision: str) -> None:
    """Every OpenVINO compile in this process computes in `precision`: Ultralytics passes its own config and
    offers no setting for it, so a user of the peer would have to do this to match MODEL_INFERENCE_PRECISION."""
    import openvino as ov

    compile_model = ov.Core.compile_model

    def compile_in_precision(self: ov.Core, model: Any, device_name: Any = None, config: Any = None) -> Any:
        return compile_model(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": precision})

    ov.Core.compile_model = compile_in_precision


def create_peer(model_dir: Path, precision: str | None = None) -> FastAPI:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks or telemetry from the peer
    from ultralytics import YOLO  # the train environment's; never importable from the service's

    if precision:
        pin_precision(precision)
    imgsz = yaml.safe_load((model_dir / "metadata.yaml").read_text()).get("imgsz", 640)
    model = YOLO(str(model_dir), task="detect")
    app = FastAPI(title="naive peer")

    @app.post("/sessions", status_code=201)
    async def new_session() -> dict[str, str]:
        return {"session_id": uuid.uuid4().hex}

    @app.get("/health/ready")
    async def ready() -> dict[str, Any]:
        return {"ready": True, "checks": {"model": {"name": model_dir.name}}}

    @app.post("/detect/{session_id}")
    async def detect(session_id: str, request: Request) -> dict[str, Any]:
        image = Image.open(io.BytesIO(await request.body())).convert("RGB")
        result = model.predict(image, imgsz=imgsz, conf=0.25, iou=0.45, device="cpu", verbose=False)[0]
        boxes = result.boxes
        return {
            "session_id": session_id,
            "detections": [
                {"label": result.names[int(c)], "class_id": int(c), "confidence": round(float(s), 4), "box": b}
                for b, s, c in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True)
            ],
            "image": {"width": image.width, "height": image.height},
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--infer-precision", help="f32, bf16 ...: as the served model's MODEL_INFERENCE_PRECISION")
    args = parser.parse_args()
    import uvicorn

    # uvicorn's defaults (uvloop and httptools where installed, as for ours), one worker, no access log (ours has
    # its own single request line; the peer gets none, which only flatters it).
    peer = create_peer(args.model_dir, args.infer_precision)
    uvicorn.run(peer, host=args.host, port=args.port, workers=1, access_log=False)


if __name__ == "__main__":
    main()
