"""Hazards, not boxes: detections associated across frames into tracks, tracks confirmed into hazard records,
records merged into a fleet-wide hazard map, exported as GeoJSON."""
