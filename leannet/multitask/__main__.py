"""``python -m leannet.multitask ...``: an alias of ``leannet multitask ...`` (run, report)."""

import sys

from leannet.cli import main

if __name__ == "__main__":
    sys.exit(main(["multitask", *sys.argv[1:]]))
