"""`python -m gateway [--host H] [--port N]`: the gateway without the rest of the CLI's imports."""

import sys

from gateway import cli
from tokentrail.cli import OneLineParser, fail
from tokentrail.errors import TokentrailError


def main() -> int:
    parser = OneLineParser(prog="tokentrail")
    cli.register(parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser))
    args = parser.parse_args(["gateway", *sys.argv[1:]])
    try:
        return int(args.func(args))
    except TokentrailError as exc:
        return fail("gateway", exc)


if __name__ == "__main__":
    sys.exit(main())
