"""`python -m gateway [--host H] [--port N]`: the gateway without the rest of the CLI's imports."""

import sys

from gateway import cli
from tokentrail.cli import CliError, OneLineParser, fail
from tokentrail.settings import ConfigError


def main() -> int:
    parser = OneLineParser(prog="tokentrail")
    cli.register(parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser))
    args = parser.parse_args(["gateway", *sys.argv[1:]])
    try:
        return args.func(args)
    except (ConfigError, CliError) as exc:
        return fail("gateway", exc)


if __name__ == "__main__":
    sys.exit(main())
