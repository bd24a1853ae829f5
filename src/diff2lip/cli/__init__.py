"""The ``diff2lip`` console script: one thin subcommand per module in this package.

Each module ``diff2lip/cli/<name>.py`` defines ``ORDER: int`` (position in ``--help``) and
``register(subparsers) -> None``, which adds its parser and sets ``func`` (``args -> int | None``).
Modules import heavy dependencies (torch, av) inside ``func`` so that ``--help`` stays fast.
User errors (:class:`~diff2lip.errors.Diff2LipError`) print one line and exit 2. Ctrl-C (SIGINT) and
SIGTERM stop the command the same way: temporary files are removed, one line is printed, and the exit
status is 130 / 143 (128 + the signal's number).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from diff2lip import __version__
from diff2lip.errors import Diff2LipError, Terminated, raise_on_sigterm


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Raw descriptions, and every option's real default appended where its help does not state it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is argparse.SUPPRESS
            or action.required
            or isinstance(
                action, argparse._StoreConstAction | argparse._StoreTrueAction | argparse._HelpAction
            )
            or "default" in text.lower()
        ):
            return text
        if action.default is None or action.default == []:
            value = "the config's value" if "override" in text.lower() else "none"
        else:
            value = "%(default)s"
        return f"{text} (default: {value})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diff2lip",
        description="Diff2Lip: audio-conditioned diffusion lip-sync — generate, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"diff2lip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [
        importlib.import_module(f"{__name__}.{m.name}")
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_")
    ]
    for mod in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        mod.register(sub)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def _unknown(parser: argparse.ArgumentParser, command: str | None, extras: list[str]) -> None:
    """Exit 2 with the subcommand's usage and the closest valid flag for each unknown option."""
    import difflib

    sub = next(
        (
            a.choices[command]
            for a in parser._actions
            if isinstance(a, argparse._SubParsersAction) and command
        ),
        parser,
    )
    known = [o for a in sub._actions for o in a.option_strings]
    hints = []
    for extra in extras:
        if extra.startswith("-"):
            name = extra.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        else:
            hints.append(extra)
    sub.error(f"unrecognized arguments: {' '.join(hints)}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown(parser, getattr(args, "command", None), extras)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    try:
        with raise_on_sigterm():
            rc = args.func(args)
    except Diff2LipError as e:
        print(f"diff2lip {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diff2lip {args.command}: interrupted; no partial output left", file=sys.stderr)
        return 130
    except Terminated:
        print(f"diff2lip {args.command}: terminated (SIGTERM); no partial output left", file=sys.stderr)
        return 143
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
