"""Lets every command run as `python -m structvpr ...`."""

from structvpr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
