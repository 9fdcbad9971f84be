import sys

from kfct.cli import main

sys.exit(main())
