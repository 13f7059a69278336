"""`python -m hazard_client ...` is the `hazard` command."""

from hazard_client.cli import main

main()
