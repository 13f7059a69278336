"""Seeded procedural road scenes with labelled hazards, in YOLO format.

Only numpy and Pillow: the service's own evaluation (`make eval`) and the tests
regenerate held-out scenes with it, so it must not need the training extra.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES = ("pothole", "traffic_cone", "debris", "crack")
SCENE_SIZE = (640, 360)


@dataclass(frozen=True)
class Hazard:
    class_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in scene pixels

    @property
    def label(self) -> str:
        return CLASS_NAMES[self.class_id]


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    hazards: list[Hazard]


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, int]:
    horizon = int(height * rng.uniform(0.3, 0.45))
    sky_top = rng.integers(120, 220, size=3)
    sky = np.linspace(sky_top, sky_top * 0.7 + 60, horizon).astype(np.uint8)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:horizon] = sky[:, None, :]
    grass = np.array([rng.integers(40, 90), rng.integers(90, 150), rng.integers(30, 70)])
    pixels[horizon:] = grass
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    tone = int(rng.integers(70, 120))
    vanish_x = width * rng.uniform(0.4, 0.6)
    road = [(vanish_x - 10, horizon), (vanish_x + 10, horizon), (width * 1.1, height), (-width * 0.1, height)]
    draw.polygon(road, fill=(tone, tone, tone + 4))
    for step in range(8):  # dashed centre line, wider as it comes closer
        t0, t1 = step / 8, (step + 0.5) / 8
        y0, y1 = horizon + (height - horizon) * t0, horizon + (height - horizon) * t1
        w0, w1 = 1 + 6 * t0, 1 + 6 * t1
        draw.polygon(
            [(vanish_x - w0, y0), (vanish_x + w0, y0), (vanish_x + w1, y1), (vanish_x - w1, y1)], fill=(230, 220, 120)
        )
    noise = rng.normal(0, 9, (height, width, 1))
    noisy = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy), horizon


def _blob(
    rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, points: int = 14
) -> list[tuple[float, float]]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, points))
    radii = rng.uniform(0.75, 1.0, points)
    return [(cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)) for a, r in zip(angles, radii, strict=True)]


def _bounds(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs, ys = zip(*points, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _draw_pothole(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, size: float
) -> tuple[float, float, float, float]:
    rim = _blob(rng, cx, cy, size / 2, size / 4.5)
    draw.polygon(rim, fill=tuple(int(v) for v in rng.integers(120, 150, 3)))
    inner = _blob(rng, cx, cy + size * 0.02, size * 0.42, size * 0.18)
    dark = int(rng.integers(15, 40))
    draw.polygon(inner, fill=(dark, dark, dark + 3))
    return _bounds(rim)


def _draw_cone(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, size: float
) -> tuple[float, float, float, float]:
    height, half = size, size * 0.32
    top, base = cy - height / 2, cy + height / 2
    orange = (int(rng.integers(230, 256)), int(rng.integers(90, 140)), int(rng.integers(0, 40)))
    draw.polygon([(cx - half * 0.15, top), (cx + half * 0.15, top), (cx + half, base), (cx - half, base)], fill=orange)
    for fraction in (0.35, 0.62):
        y = top + height * fraction
        w = half * (0.15 + 0.85 * fraction)
        draw.rectangle([cx - w, y, cx + w, y + height * 0.09], fill=(245, 245, 245))
    draw.rectangle([cx - half * 1.25, base - height * 0.06, cx + half * 1.25, base], fill=(30, 30, 30))
    return cx - half * 1.25, top, cx + half * 1.25, base


def _draw_debris(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, size: float
) -> tuple[float, float, float, float]:
    points: list[tuple[float, float]] = []
    for _ in range(int(rng.integers(3, 7))):
        px = cx + rng.uniform(-0.35, 0.35) * size
        py = cy + rng.uniform(-0.15, 0.15) * size
        piece = _blob(rng, px, py, size * rng.uniform(0.1, 0.2), size * rng.uniform(0.06, 0.14), points=6)
        colour = tuple(int(v) for v in rng.integers(60, 200, 3))
        draw.polygon(piece, fill=colour, outline=(20, 20, 20))
        points.extend(piece)
    return _bounds(points)


def _draw_crack(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, size: float
) -> tuple[float, float, float, float]:
    points = [(cx - size / 2, cy + rng.uniform(-0.15, 0.15) * size)]
    for step in range(1, 9):
        points.append((cx - size / 2 + size * step / 8, cy + rng.uniform(-0.22, 0.22) * size))
    width = max(2, int(size / 30))
    draw.line(points, fill=(25, 25, 25), width=width, joint="curve")
    branch_from = points[int(rng.integers(2, 6))]
    branch = [
        branch_from,
        (branch_from[0] + rng.uniform(-0.2, 0.2) * size, branch_from[1] + rng.uniform(0.15, 0.3) * size),
    ]
    draw.line(branch, fill=(25, 25, 25), width=max(1, width - 1))
    x1, y1, x2, y2 = _bounds(points + branch)
    return x1 - width, y1 - width, x2 + width, y2 + width


_PAINTERS = (_draw_pothole, _draw_cone, _draw_debris, _draw_crack)


def _overlaps(box: tuple[float, float, float, float], placed: list[Hazard]) -> bool:
    return any(not (box[2] < o.box[0] or box[0] > o.box[2] or box[3] < o.box[1] or box[1] > o.box[3]) for o in placed)


def generate_scene(rng: np.random.Generator, size: tuple[int, int] = SCENE_SIZE) -> Scene:
    width, height = size
    image, horizon = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    hazards: list[Hazard] = []
    for _ in range(int(rng.integers(0, 5))):
        class_id = int(rng.integers(0, len(CLASS_NAMES)))
        depth = rng.uniform(0.2, 1.0)  # 0 at the horizon, 1 at the bottom edge
        cy = horizon + (height - horizon) * depth * 0.9 + 10
        cx = width * rng.uniform(0.12, 0.88)
        extent = height * (0.1 + 0.35 * depth) * rng.uniform(0.8, 1.2)
        if class_id == 3:
            extent *= 1.3
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        box = _PAINTERS[class_id](ImageDraw.Draw(layer), rng, cx, cy, extent)
        box = (max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3]))
        if _overlaps(box, hazards) or box[2] - box[0] < 6 or box[3] - box[1] < 6:
            continue
        image.paste(layer, (0, 0), layer)
        hazards.append(Hazard(class_id, box))
    del draw
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return Scene(image, hazards)


def yolo_label_lines(scene: Scene) -> list[str]:
    width, height = scene.image.size
    lines = []
    for hazard in scene.hazards:
        x1, y1, x2, y2 = hazard.box
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{hazard.class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines


def write_split(root: Path, split: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        scene = generate_scene(rng)
        scene.image.save(images / f"{split}_{index:04d}.jpg", quality=90)
        (labels / f"{split}_{index:04d}.txt").write_text("\n".join(yolo_label_lines(scene)) + "\n")


def write_dataset(root: Path, train: int, val: int, seed: int) -> Path:
    write_split(root, "train", train, seed)
    write_split(root, "val", val, seed + 1)
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    config = root / "hazards.yaml"
    config.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return config


# --- Drives: a camera moving along a synthetic road past placed hazards of known identity and GPS -----------------
# A pinhole camera CAMERA_HEIGHT_M above a flat road, looking along it (no yaw), pitched down so that the horizon is
# where the road's background draws it, with f = FOCAL_FRACTION * width (a horizontal field of view of ~58 degrees)
# and its principal point at the image centre. A ground point `ahead` metres in front and `right` metres to the right
# is drawn where `DriveCamera.image_point` puts it, and every hazard is drawn with the bottom centre of its box
# exactly there: a hazard's GPS is the point where it touches the road nearest the camera (a cone's base, a pothole's
# near rim), which is what projecting the bottom centre of a box back onto the road recovers. Hazards are visible
# from VISIBLE_FROM_M to VISIBLE_TO_M ahead, which keeps their drawn size within what the model was trained on.
# (Before this, rows were drawn at horizon + f*h/d, the formula of a level camera, with the horizon off the image's
# centre, and flat hazards were centred on their point, not standing on it: no pinhole camera drew that.)

CAMERA_HEIGHT_M = 1.4
FOCAL_FRACTION = 0.9
CAMERA_HFOV_DEG = math.degrees(2 * math.atan(0.5 / FOCAL_FRACTION))
VISIBLE_FROM_M, VISIBLE_TO_M = 4.5, 14.0
HAZARD_SIZE_M = (1.3, 0.9, 1.2, 1.7)  # pothole width, cone height, debris spread, crack length
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class DriveCamera:
    height_m: float
    pitch_deg: float  # below the horizon
    hfov_deg: float
    size: tuple[int, int]

    @property
    def focal_px(self) -> float:
        return (self.size[0] / 2) / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def horizon_row(self) -> float:
        return self.size[1] / 2 - self.focal_px * math.tan(math.radians(self.pitch_deg))

    def image_point(self, ahead: float, right: float) -> tuple[float, float]:
        """Pixel (u, v) of the ground point `ahead` metres in front of the camera and `right` to its right."""
        pitch = math.radians(self.pitch_deg)
        depth = ahead * math.cos(pitch) + self.height_m * math.sin(pitch)  # along the optical axis
        below = self.height_m * math.cos(pitch) - ahead * math.sin(pitch)  # down the image's axis
        return self.size[0] / 2 + self.focal_px * right / depth, self.size[1] / 2 + self.focal_px * below / depth


def drive_camera(road_seed: int, size: tuple[int, int] = SCENE_SIZE) -> DriveCamera:
    """The camera of a road's drives: its pitch puts the horizon where the road's background draws it."""
    horizon = int(size[1] * np.random.default_rng(road_seed).uniform(0.33, 0.4))
    focal = FOCAL_FRACTION * size[0]
    pitch = math.degrees(math.atan((size[1] / 2 - horizon) / focal))
    return DriveCamera(CAMERA_HEIGHT_M, pitch, CAMERA_HFOV_DEG, size)


@dataclass(frozen=True)
class PlacedHazard:
    hazard_id: int
    class_id: int
    distance_m: float  # along the road from its start
    lateral_m: float  # right of the road's centre line
    lat: float
    lon: float
    look: int  # seed of its shape and colours: the same in every frame and for every vehicle

    @property
    def label(self) -> str:
        return CLASS_NAMES[self.class_id]


@dataclass(frozen=True)
class Road:
    seed: int
    origin: tuple[float, float]  # lat, lon of its start
    bearing_deg: float  # direction of travel, clockwise from north
    length_m: float
    hazards: tuple[PlacedHazard, ...]

    def position(self, distance_m: float, lateral_m: float = 0.0) -> tuple[float, float]:
        """WGS-84 lat, lon of a point on the road (local flat-earth approximation, fine over a few km)."""
        bearing = math.radians(self.bearing_deg)
        east = distance_m * math.sin(bearing) + lateral_m * math.cos(bearing)
        north = distance_m * math.cos(bearing) - lateral_m * math.sin(bearing)
        lat0, lon0 = self.origin
        return lat0 + north / METRES_PER_DEGREE, lon0 + east / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))


@dataclass(frozen=True)
class DriveFrame:
    index: int
    seconds: float  # since the drive started
    image: Image.Image
    lat: float  # the camera's GPS fix (with noise)
    lon: float
    heading: float
    speed_mps: float
    visible: list[tuple[int, Hazard]]  # placed hazard id and its box in this frame


def generate_road(seed: int, length_m: float = 200.0, hazards: int = 8, neighbours: float = 0.15) -> Road:
    """Hazards at least 12 m apart along the road; with probability `neighbours` one gets a same-class neighbour
    beside it (same distance, the other side of the lane)."""
    rng = np.random.default_rng(seed)
    origin = (float(rng.uniform(40, 55)), float(rng.uniform(-5, 20)))
    bearing = float(rng.uniform(0, 360))
    road = Road(seed, origin, bearing, length_m, ())
    placed: list[PlacedHazard] = []
    gaps = rng.uniform(12, 30, hazards)
    distance = 20.0
    for gap in gaps:
        distance += float(gap)
        if distance > length_m - VISIBLE_FROM_M:
            break
        class_id = int(rng.integers(0, len(CLASS_NAMES)))
        lateral = float(rng.uniform(-1.4, 1.4))
        sides = [lateral]
        if rng.random() < neighbours:
            sides = [-abs(lateral) - 0.4, abs(lateral) + 0.4]
        for side in sides:
            lat, lon = road.position(distance, side)
            look = int(rng.integers(0, 2**31))
            placed.append(PlacedHazard(len(placed), class_id, distance, side, lat, lon, look))
    return Road(seed, origin, bearing, length_m, tuple(placed))


def _drive_background(seed: int, width: int, height: int) -> tuple[Image.Image, int, float]:
    rng = np.random.default_rng(seed)
    horizon = int(height * rng.uniform(0.33, 0.4))  # as `drive_camera` draws it
    rng.uniform(0.45, 0.55)  # once the vanishing point's column: drawn still, so that the colours stay the same
    vanish_x = width / 2  # the camera looks along the road
    pixels = np.zeros((height, width, 3), np.uint8)
    sky_top = rng.integers(120, 220, size=3)
    pixels[:horizon] = np.linspace(sky_top, sky_top * 0.7 + 60, horizon).astype(np.uint8)[:, None, :]
    pixels[horizon:] = np.array([rng.integers(40, 90), rng.integers(90, 150), rng.integers(30, 70)])
    image = Image.fromarray(pixels)
    tone = int(rng.integers(70, 120))
    road = [(vanish_x - 10, horizon), (vanish_x + 10, horizon), (width * 1.1, height), (-width * 0.1, height)]
    ImageDraw.Draw(image).polygon(road, fill=(tone, tone, tone + 4))
    return image, horizon, vanish_x


def _standing_at(
    hazard: PlacedHazard, u: float, v: float, extent: float, size: tuple[int, int]
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The hazard drawn with the bottom centre of its box at (u, v): drawn once to measure, once in place (the same
    look: the same shape, moved)."""
    painter = _PAINTERS[hazard.class_id]
    trial = painter(ImageDraw.Draw(Image.new("RGBA", size)), np.random.default_rng(hazard.look), u, v, extent)
    du, dv = u - (trial[0] + trial[2]) / 2, v - trial[3]
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    box = painter(ImageDraw.Draw(layer), np.random.default_rng(hazard.look), u + du, v + dv, extent)
    return layer, box


def drive(
    road: Road,
    *,
    speed_mps: float,
    fps: float,
    seed: int,
    lane_offset_m: float = 0.0,
    gps_bias_m: float = 1.5,
    gps_noise_m: float = 0.5,
    size: tuple[int, int] = SCENE_SIZE,
    start_m: float = 0.0,
) -> Iterator[DriveFrame]:
    """One vehicle's frames from `start_m` along the road to its end. Its GPS has a bias of its own (drawn once, about
    `gps_bias_m`) plus per-fix noise; the camera sees every hazard between VISIBLE_FROM_M and VISIBLE_TO_M ahead."""
    width, height = size
    rng = np.random.default_rng(seed)
    background, _, _ = _drive_background(road.seed, width, height)
    camera = drive_camera(road.seed, size)
    bias = rng.normal(0, gps_bias_m, 2)
    index = 0
    while (travelled := start_m + index / fps * speed_mps) < road.length_m:
        image = background.copy()
        visible: list[tuple[int, Hazard]] = []
        placed = [h for h in road.hazards if VISIBLE_FROM_M <= h.distance_m - travelled <= VISIBLE_TO_M]
        for hazard in sorted(placed, key=lambda h: -h.distance_m):  # far first: near ones are drawn over them
            ahead = hazard.distance_m - travelled
            u, v = camera.image_point(ahead, hazard.lateral_m - lane_offset_m)
            layer, box = _standing_at(hazard, u, v, camera.focal_px * HAZARD_SIZE_M[hazard.class_id] / ahead, size)
            box = (max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3]))
            image.paste(layer, (0, 0), layer)
            visible.append((hazard.hazard_id, Hazard(hazard.class_id, box)))
        noise = rng.normal(0, 6, (height, width, 1))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
        fix = bias + rng.normal(0, gps_noise_m, 2)
        lat, lon = road.position(travelled + float(fix[0]), lane_offset_m + float(fix[1]))
        yield DriveFrame(index, index / fps, image, lat, lon, road.bearing_deg, speed_mps, visible)
        index += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/dataset"))
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=80)
    parser.add_argument("--seed", type=int, default=408)
    args = parser.parse_args()
    print(write_dataset(args.out, args.train, args.val, args.seed))


if __name__ == "__main__":
    main()
