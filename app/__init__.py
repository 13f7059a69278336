"""Hazard Detection API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hazard-detection-api")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+source"
