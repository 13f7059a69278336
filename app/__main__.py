"""`python -m app`: the same as `hazard-api` (app/entrypoints/api.py)."""

from app.entrypoints.api import main

if __name__ == "__main__":
    main()
