"""`python -m aidx.inference`: the same as the `aidx` command."""

from aidx.service.cli import main

if __name__ == "__main__":
    main()
