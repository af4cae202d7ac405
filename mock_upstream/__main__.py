"""`python -m mock_upstream [--host H] [--port P] [--workers N]`: the CLI sub-command."""

import sys

from tokentrail.cli import main

sys.exit(main(["mock-upstream", *sys.argv[1:]]))
