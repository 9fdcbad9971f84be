"""`python -m kfct.serving --host 127.0.0.1 --port 8080 [--model NAME] [--canary-version V --canary-percent P]`."""

import sys

from kfct.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
