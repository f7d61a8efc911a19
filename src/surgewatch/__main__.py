"""Entry point for ``python -m surgewatch``."""

from surgewatch.cli import main

if __name__ == "__main__":
    main()
