import sys

from mixer_console.cli import main

sys.exit(main())
