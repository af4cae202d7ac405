"""`python -m tokentrail` runs the CLI; importing `main` keeps one copy of its exception classes."""

import sys

from tokentrail.cli import main

sys.exit(main())
