"""Annotated uploads: the policy that picks frames, the background service, the spool, the stores, drawing."""
