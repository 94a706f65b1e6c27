import sys

from fencekeeper.cli import main

sys.exit(main())
