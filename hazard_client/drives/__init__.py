"""Drives as field teams record them: a dashcam video with its GPS track, or photos with their EXIF GPS, turned into
frames that carry where and when they were taken. Only the sampled frames travel to the server.

Imported lazily by the command line (PyAV, gpxpy, pynmea2 and Pillow load only when a drive is ingested).
"""
