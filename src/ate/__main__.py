import sys

from ate.cli import main

sys.exit(main())
