"""Command line: ``python -m bayeskit.inference tour [--out reports] [--quick] [--only NAME]``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bayeskit", description="bayeskit command line")
    commands = parser.add_subparsers(dest="command", required=True)
    tour = commands.add_parser("tour", help="run every pair on embedded data and write reports")
    tour.add_argument("--out", default="reports", help="folder for the HTML reports (default: reports)")
    tour.add_argument("--quick", action="store_true", help="smaller settings, as in CI")
    tour.add_argument("--only", default=None, help="run only the pairs whose name contains this")
    args = parser.parse_args(argv)

    from ._tour import run_tour

    rows = run_tour(args.out, quick=args.quick, only=args.only)
    print(f"wrote {len(rows)} reports and index.html to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
