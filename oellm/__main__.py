import sys

from oellm.cli import main

sys.exit(main())
