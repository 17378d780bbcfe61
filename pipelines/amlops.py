"""amlops: one command for every pipeline, service and client verb.

    amlops train run | show | publish | models
    amlops batch-score run | show | publish | models
    amlops deploy [deploy] | list | show | logs | keys | update | invoke | stop | start | delete
    amlops workspace serve | status | keys | runs | run-status | logs | cancel | endpoints | ...
    amlops v2 export | run | show   (SDK v2: anyone's v1 steps as v2 YAML; v2 pipeline YAML run locally)
    amlops endpoint call      amlops trigger URL      amlops benchmark      amlops demo
    amlops completion bash    (eval "$(amlops completion bash)" turns on tab completion)

Each word maps onto a `python -m` module, which keeps working on its own (the table COMMANDS);
`amlops X --help` is that module's help.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Command:
    module: str
    help: str
    verb: str | None = None  # a module without verbs of its own gets this one: ``amlops endpoint call``


COMMANDS: dict[str, Command] = {
    "train": Command("pipelines.train", "the training pipeline: run, show, publish, models"),
    "batch-score": Command(
        "pipelines.batch_score", "the batch-inference pipeline: run, show, publish, models"
    ),
    "deploy": Command("pipelines.deploy", "real-time services: deploy, list, show, logs, keys, invoke, ..."),
    "workspace": Command(
        "pipelines.workspace", "the local workspace service, runs, logs, endpoints, schedules"
    ),
    "v2": Command(
        "pipelines.v2.__main__", "Azure ML SDK v2: export v1 steps as v2 YAML, run or show v2 YAML"
    ),
    "endpoint": Command("clients.endpoint", "call a real-time endpoint with rows of a dataset", verb="call"),
    "trigger": Command("clients.trigger_pipeline", "submit a run to a pipeline endpoint over REST and wait"),
    "benchmark": Command("clients.benchmark", "load-test a real-time endpoint"),
    "demo": Command("pipelines.demo", "the quick start: train, publish, batch-score, deploy, call"),
    "datagen": Command("pipelines.datagen", "write a new bike-like CSV to score"),
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    word, rest = args[0], args[1:]
    if word == "completion":
        return _completion(rest)
    command = COMMANDS.get(word)
    if command is None:
        print(
            f"error: unknown command {word!r} (use one of: {', '.join(COMMANDS)}, completion)",
            file=sys.stderr,
        )
        return 2
    if command.verb:
        if rest and rest[0] == command.verb:
            rest = rest[1:]
        elif rest and not rest[0].startswith("-"):
            print(f"error: amlops {word} has one verb, {command.verb!r}", file=sys.stderr)
            return 2
    return _module_main(command.module)(rest) or 0


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [(__doc__ or "").strip(), "", "commands:"]
    lines += [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items()]
    lines.append(f"  {'completion':<{width}}  print a bash completion script")
    return "\n".join(lines)


def _module_main(module: str) -> Callable[[list[str]], int]:
    return importlib.import_module(module).main


# ---- shell completion, generated from each module's own argparse tree ---------------------------------


class _Captured(BaseException):  # not an Exception: a CLI's error handling lets it through
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def captured_parser(module: str) -> argparse.ArgumentParser:
    """The parser ``module.main`` builds, caught as it starts parsing (nothing of the command runs)."""
    original = argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    try:
        _module_main(module)([])
    except _Captured as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    raise RuntimeError(f"{module}.main() returned without parsing its arguments")


@dataclass
class Node:
    """A command word: its sub-words, its options, and the choices of options that have them."""

    words: dict[str, Node] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)


def parser_node(parser: argparse.ArgumentParser) -> Node:
    node = Node()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                node.words[name] = parser_node(sub)
        elif action.option_strings and action.help != argparse.SUPPRESS:
            node.options += [o for o in action.option_strings if o.startswith("--")] or action.option_strings
            if action.choices:
                for opt in action.option_strings:
                    node.choices[opt] = [str(c) for c in action.choices]
    return node


def command_tree() -> Node:
    root = Node(options=["--help"])
    for name, command in COMMANDS.items():
        node = parser_node(captured_parser(command.module))
        root.words[name] = Node(words={command.verb: node}) if command.verb else node
    root.words["completion"] = Node(words={"bash": Node(options=["--json"])})
    return root


def leaves(node: Node, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Node]]:
    """Every verb (a word without sub-words) with its path."""
    if not node.words:
        return [(path, node)]
    return [leaf for word, sub in node.words.items() for leaf in leaves(sub, (*path, word))]


def bash_script(root: Node) -> str:
    """A bash completion function: sub-words and options for the words typed so far, option choices."""
    entries: list[str] = []

    def walk(node: Node, path: str) -> None:
        entries.append(f'  ["{path}"]="{" ".join([*node.words, *node.options])}"')
        for opt, values in node.choices.items():
            entries.append(f'  ["{path} {opt}"]="{" ".join(values)}"')
        for word, sub in node.words.items():
            walk(sub, f"{path} {word}")

    walk(root, "amlops")
    body = "\n".join(entries)
    return f"""# bash completion for amlops: eval "$(amlops completion bash)"
declare -gA _AMLOPS_WORDS=(
{body}
)
_amlops() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" path=amlops i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    [[ "$w" == -* ]] && continue
    if [[ -n "${{_AMLOPS_WORDS["$path $w"]+x}}" ]]; then path="$path $w"; fi
  done
  if [[ "$prev" == -* && -n "${{_AMLOPS_WORDS["$path $prev"]+x}}" ]]; then
    COMPREPLY=($(compgen -W "${{_AMLOPS_WORDS["$path $prev"]}}" -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -W "${{_AMLOPS_WORDS["$path"]}}" -- "$cur"))
}}
complete -o default -F _amlops amlops
"""


def _completion(rest: list[str]) -> int:
    if rest[:1] != ["bash"]:
        print(
            'error: amlops completion takes one shell: bash (eval "$(amlops completion bash)")',
            file=sys.stderr,
        )
        return 2
    tree = command_tree()
    if "--json" in rest:  # the command tree itself
        print(json.dumps(asdict(tree)))
        return 0
    print(bash_script(tree), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
