"""`magnet` console entry point: one sub-command per component.

Each sub-command lives in its own module, imported only when chosen (so
`magnet --help` needs no torch), and exposes:
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int | None
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {  # name -> (module, help, the pyproject extra it needs beyond the bare client install)
    "serve": ("magnet.server.cli", "start the HTTP service", "server"),
    "train": ("magnet.training.cli", "adapt a causal LM with MAGNET's three objectives (LoRA)", "train"),
    "train-tagger": ("magnet.training.tagger_cli", "train NER/POS/chunk heads on frozen word vectors", "train"),
    "eval": ("magnet.evaluation.cli", "evaluate the loaded model (sts, infill, tagging, wikitext, repetition, cloze, paper)",
             "train"),
}
DISTRIBUTION = "magnet-llm"  # pyproject's [project] name
THREADS_FLAG = "--threads"
THREADS_HELP = ("torch threads (default: the cores this process may use, less those already busy; "
                "MAGNET_THREADS or OMP_NUM_THREADS set it too, see magnet/threads.py)")


# flag -> (config field, type, help): sub-commands declare their flags as such a table
FlagTable = dict[str, tuple[str, type, str]]


def add_flag_table(parser: argparse.ArgumentParser, flags: FlagTable, choices: dict | None = None,
                   env_prefix: str | None = None) -> None:
    """One option per row, stored under the field's name, None when not given."""
    for flag, (field, kind, help_text) in flags.items():
        env = f" [{env_prefix}{field.upper()}]" if env_prefix else ""
        parser.add_argument(flag, dest=field, type=kind, default=None,
                            choices=(choices or {}).get(field), help=help_text + env)


def given_flags(args: argparse.Namespace, flags: FlagTable) -> dict:
    """{field: value} for the flags of the table that were given."""
    return {field: getattr(args, field) for field, _, _ in flags.values() if getattr(args, field) is not None}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magnet", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                        help=f"{', '.join(LOG_LEVELS)} (default INFO), before the command: magnet --log-level debug serve")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.add_argument(THREADS_FLAG, type=int, metavar="N", help=THREADS_HELP)
    for name, (module, help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def take_threads_flag(argv: list[str]) -> tuple[int | None, list[str]]:
    """--threads N from anywhere on the line (before or after the sub-command), and the rest."""
    taker = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    taker.add_argument(THREADS_FLAG, type=int, default=None)
    known, rest = taker.parse_known_args(argv)
    return known.threads, rest


def extra_requirements(extra: str) -> set[str] | None:
    """Distribution names (normalized) an extra of the installed package brings, through
    nested extras; None when the package metadata is not there (run from a source tree)."""
    import importlib.metadata
    import re

    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    names, extras, todo = set(), set(), [extra]
    while todo:
        current = todo.pop()
        extras.add(current)
        for line in requires:
            requirement, _, marker = line.partition(";")
            if f'extra == "{current}"' not in marker:
                continue
            name = re.split(r"[\[<>=!~ ]", requirement.strip(), maxsplit=1)[0]
            if name == DISTRIBUTION:
                todo += [e for e in re.findall(r"\[(.*?)\]", requirement)[0].split(",") if e not in extras]
            else:
                names.add(name.lower().replace("_", "-"))
    return names


def missing_extra_message(command: str, error: ModuleNotFoundError) -> str | None:
    """One line saying which install adds the module a sub-command missed, or None when the
    module is not one its extra provides (a bug, or an optional package such as vllm)."""
    _, _, extra = COMMANDS[command]
    missing = (error.name or "").split(".")[0]
    provided = extra_requirements(extra)
    if not missing or missing == "magnet" or (provided is not None
                                              and missing.lower().replace("_", "-") not in provided):
        return None
    return (f"magnet {command}: No module named {missing!r}. The bare install is the client only; "
            f"add the {extra} extra: from the repository, pip install \".[{extra}]\" "
            f"(torch first, as README.md's \"Install pieces separately\" says)")


def main(argv: list[str] | None = None) -> int:
    threads, argv = take_threads_flag(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name first, then let its module define its own flags.
    known, rest = parser.parse_known_args(argv)
    try:
        return run_command(known, rest, threads)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(known.command, exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1


def run_command(known: argparse.Namespace, rest: list[str], threads: int | None) -> int:
    module_name, help_text, _ = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"magnet {known.command}", description=help_text)
    sub_parser.add_argument(THREADS_FLAG, type=int, metavar="N", help=THREADS_HELP)  # for --help: taken above
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(rest)
    logging.basicConfig(level=known.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from magnet.threads import configure_threads

    try:
        configure_threads(threads)
    except ValueError as exc:
        sub_parser.error(str(exc))
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
