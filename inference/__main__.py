"""`python -m aidx.inference`: the same as the `aidx` command."""

from aidx.inference.cli import main

if __name__ == "__main__":
    main()
