import sys

from effnas.nas.cli.main import main

sys.exit(main())
