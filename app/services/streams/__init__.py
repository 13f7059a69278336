"""Live frames over one WebSocket per session: the message protocol, the window of frames in flight, the
process's stream slots. No HTTP types here: the WebSocket endpoint is app/http/routers/stream.py."""
