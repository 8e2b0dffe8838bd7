"""Reading experiment files: YAML in, a validated ChaosExperiment out.

Every problem a user can cause becomes one line, ``file:line: field.path: what was expected``,
located through the YAML node tree so that the line is the one to edit.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from paychaos.experiments.locating import Segment, YamlTree, node_line, pairs, render_path
from paychaos.experiments.references import ProbeNames, check_references, normalize, suggest
from paychaos.experiments.spec import KIND, NAME_PATTERN, ChaosExperiment
from paychaos.targets import Inventory

__all__ = ["Problem", "ProbeNames", "SpecError", "load_experiment", "load_experiments", "parse_experiment"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, where it is, and what was expected instead."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return text.translate(_ONE_LINE)


# Whatever a file contains, a problem stays on one line: escape every character splitlines() splits on.
_ONE_LINE = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class SpecError(Exception):
    """The files do not describe valid experiments; ``str()`` is one line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def load_experiment(path: str | Path, inventory: Inventory | None = None, *, probes: ProbeNames | None = None) -> ChaosExperiment:
    """Read and validate one experiment file; with an inventory (and probes), check what it names exists."""
    return _load(path, inventory, probes).experiment


def load_experiments(
    paths: Iterable[str | Path], inventory: Inventory | None = None, *, probes: ProbeNames | None = None
) -> list[ChaosExperiment]:
    """Read several files, reporting the problems of all of them at once; names must be unique."""
    problems: list[Problem] = []
    loaded: list[_Loaded] = []
    for path in paths:
        try:
            loaded.append(_load(path, inventory, probes))
        except SpecError as exc:
            problems.extend(exc.problems)
    first_file: dict[str, str] = {}
    for item in loaded:
        name = item.experiment.name
        if name in first_file:
            line, written = item.tree.locate(("metadata", "name"))
            problems.append(Problem(item.source, line, written, f"experiment name {name!r} is also used by {first_file[name]}"))
        else:
            first_file[name] = item.source
    if problems:
        raise SpecError(problems)
    return [item.experiment for item in loaded]


def parse_experiment(
    text: str, source: str = "<text>", inventory: Inventory | None = None, *, probes: ProbeNames | None = None
) -> ChaosExperiment:
    """Validate an experiment given as YAML text; ``source`` names it in error messages."""
    return _parse(text, source, inventory, probes).experiment


# -- reading and parsing ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    experiment: ChaosExperiment
    tree: YamlTree
    source: str


def _load(path: str | Path, inventory: Inventory | None, probes: ProbeNames | None) -> _Loaded:
    return _parse(read_document(path, "an experiment"), str(path), inventory, probes)


def read_document(path: str | Path, what: str) -> str:
    """The text of a YAML document users wrote (``what``: "an experiment"), or a SpecError saying why not."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([Problem(source, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(source, None, "", f"is a directory: give the {what.split()[-1]} files in it (*.yaml)")]) from None
    except OSError as exc:
        raise SpecError([Problem(source, None, "", f"cannot read it: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_BYTES:
        raise SpecError([Problem(source, None, "", _too_big(what))])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError([Problem(source, line, "", "not UTF-8 text: save the file as UTF-8")]) from None


# An experiment is a few kilobytes and a few levels deep; anything far beyond is the wrong file,
# and would otherwise exhaust the parser's stack (libyaml recurses in C) or flood the terminal.
MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_PROBLEMS = 50


def _too_big(what: str) -> str:
    return f"over {MAX_BYTES // 1_000_000} MB, far too big for {what}: is this the right file?"


def _parse(text: str, source: str, inventory: Inventory | None, probes: ProbeNames | None) -> _Loaded:
    experiment, tree = parse_document(
        text, source, ChaosExperiment, KIND, "an experiment", lambda e: check_references(e, inventory, probes)
    )
    return _Loaded(experiment, tree, source)


M = TypeVar("M", bound=BaseModel)


def parse_document(
    text: str,
    source: str,
    model: type[M],
    kind: str,
    noun: str,
    references: Callable[[M], Iterable[tuple[tuple[Segment, ...], str]]] = lambda _: (),
) -> tuple[M, YamlTree]:
    """Validate a Kubernetes-shaped YAML document (``noun``: "an experiment") against ``model``:
    every problem with file:line."""
    if len(text) > MAX_BYTES:
        raise SpecError([Problem(source, None, "", _too_big(noun))])
    root, data = _read_yaml(text, source)
    if root is None or data is None:
        raise SpecError([Problem(source, 1, "", f"the file is empty: expected {noun} (apiVersion, kind, metadata, spec)")])
    tree = YamlTree(root)
    if not isinstance(data, dict):
        got = _describe(data)
        raise SpecError([Problem(source, node_line(root), "", f"expected a mapping with apiVersion, kind, metadata and spec, got {got}")])
    written_kind = data.get("kind")
    if written_kind is not None and written_kind != kind:
        line, path = tree.locate(("kind",))
        message = f"expected {kind!r}, got {_describe(written_kind)}: this file is not {noun}"
        raise SpecError([Problem(source, line, path, message)])

    problems = [Problem(source, line, path, message) for line, path, message in tree.duplicate_keys()]
    document: M | None = None
    try:
        document = model.model_validate(data)
    except ValidationError as exc:
        problems.extend(Problem(source, *_explain(err, tree, model)) for err in exc.errors())
    except RecursionError:
        problems.append(Problem(source, 1, "", "the document is nested too deeply"))
    else:
        problems.extend(Problem(source, *tree.locate(path), message) for path, message in references(document))
    if problems:
        unique = sorted(dict.fromkeys(problems), key=lambda p: p.line or 0)
        if len(unique) > MAX_PROBLEMS:
            hidden = len(unique) - MAX_PROBLEMS
            unique = [*unique[:MAX_PROBLEMS], Problem(source, None, "", f"{hidden} more problems not shown: fix these first")]
        raise SpecError(unique)
    assert document is not None
    return document, tree


# libyaml is some twenty times faster than the pure-Python parser; both give marks on every node.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    loader: yaml.SafeLoader | None = None
    root: yaml.Node | None = None
    try:
        _check_depth(text, source)
        loader = _Loader(text)
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    except yaml.reader.ReaderError as exc:
        raise SpecError([Problem(source, _reader_line(text, exc), "", f"invalid YAML: {_reader_problem(exc)}")]) from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError([Problem(source, _mark_line(exc), "", _yaml_problem(exc, text))]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(source, None, "", f"invalid YAML: {exc}")]) from None
    except (ValueError, OverflowError) as exc:  # PyYAML's timestamp constructor, e.g. 2024-13-01
        line = _bad_timestamp_line(loader, root) if loader is not None and root is not None else None
        raise SpecError([Problem(source, line, "", f"invalid date or time: {exc}")]) from None
    except RecursionError:
        raise SpecError([Problem(source, 1, "", "invalid YAML: nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()


_OPENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _check_depth(text: str, source: str) -> None:
    """Refuse deep nesting from the token stream, which is flat, before anything recurses."""
    scanner = _Loader(text)
    try:
        depth = 0
        while scanner.check_token():
            token = scanner.get_token()
            if isinstance(token, _OPENS):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(source, token.start_mark.line + 1)
            elif isinstance(token, _CLOSES):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        # PyYAML 6.0.4 caps nesting in its scanner, which reads a flow collection's tokens ahead
        # of us: its error can come before our count reaches the limit.
        if "nesting depth" in str(exc.problem):
            raise _too_deep(source, _mark_line(exc)) from None
        raise
    finally:
        scanner.dispose()


def _too_deep(source: str, line: int | None) -> SpecError:
    return SpecError([Problem(source, line, "", f"nested more than {MAX_DEPTH} levels deep: is this the right file?")])


def _reader_line(text: str, exc: yaml.reader.ReaderError) -> int:
    # libyaml counts the position in UTF-8 bytes, the pure-Python reader in characters.
    if _Loader is yaml.SafeLoader:
        return text[: exc.position].count("\n") + 1
    return text.encode("utf-8", "surrogatepass")[: exc.position].count(b"\n") + 1


def _bad_timestamp_line(loader: yaml.SafeLoader, root: yaml.Node) -> int | None:
    pending, seen = [root], set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp":
            try:
                loader.construct_yaml_timestamp(node)
            except (ValueError, OverflowError):
                return node_line(node)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending.extend(n for pair in node.value for n in pair)
    return None


def _reader_problem(exc: yaml.reader.ReaderError) -> str:
    return f"unacceptable character #x{exc.character:04x}: {exc.reason}" if isinstance(exc.character, int) else str(exc.reason)


def _char_at(text: str, mark: yaml.Mark | None) -> str:
    lines = text.split("\n")
    if mark is None or mark.line >= len(lines) or mark.column >= len(lines[mark.line]):
        return ""
    return lines[mark.line][mark.column]


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else None


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str) -> str:
    problem = exc.problem or exc.context or "malformed document"
    if isinstance(exc, yaml.composer.ComposerError) and "another document" in problem:
        return "one experiment per file: a second document starts here"
    message = f"invalid YAML: {problem}"
    if exc.context and exc.problem and exc.context_mark is not None and "next token" not in exc.context:
        message += f" ({exc.context} started at line {exc.context_mark.line + 1})"
    if "mapping values are not allowed" in problem:
        message += "; quote text that contains ': '"
    elif "cannot start any token" in problem and _char_at(text, exc.problem_mark) == "\t":
        message += "; indent with spaces, not tabs"
    return message


# -- explaining pydantic's errors ----------------------------------------------------------------

_RELATIVE = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*): (.+)$", re.S)


def _explain(err: ErrorDetails, tree: YamlTree, root: type[BaseModel]) -> tuple[int, str, str]:
    """Turn one pydantic error into (line, path as written, message)."""
    loc, kind = list(err["loc"]), err["type"]
    if kind == "missing":
        written, node, key_node = tree.walk(loc[:-1])
        return tree.line_of(node, key_node), render_path(written), f"missing required field {loc[-1]!r}"
    written, node, key_node = tree.walk(loc)
    if kind == "extra_forbidden":
        return node_line(key_node or node), render_path(written), _unknown_field(written, tree, root)
    message = _message(err)
    relative = _RELATIVE.match(message) if kind in ("value_error", "assertion_error") else None
    if relative:
        # A validator naming a key inside the mapping it judged ("percent: give count or percent").
        inner = _parse_relative(relative.group(1))
        inner_written, inner_node, inner_key = tree.walk(inner, start=node)
        if len(inner_written) == len(inner):
            return tree.line_of(inner_node, inner_key), render_path([*written, *inner_written]), relative.group(2)
    return tree.line_of(node, key_node), render_path(written), message


def _parse_relative(path: str) -> list[Segment]:
    return [int(index) if index else name for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", path)]


def _message(err: ErrorDetails) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err["input"]
    got = _describe(value)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {got}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return f"expected a lowercase name of letters, digits and '-' such as 'acquirer-slowdown', got {got}"
    if kind == "string_too_long":
        return f"expected at most {ctx['max_length']} characters, got {len(value)}"
    if kind == "string_type":
        hint = f": quote it if you mean the text '{value}'" if isinstance(value, int | float) else ""
        return f"expected text, got {got}{hint}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {got}"
    bounds = {"greater_than": "above", "greater_than_equal": "at least", "less_than": "below", "less_than_equal": "at most"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"expected a number {bounds[kind]} {limit}, got {got}"
    if kind == "too_short":
        return f"expected at least {ctx['min_length']} item{'s' if ctx['min_length'] != 1 else ''}, got {ctx['actual_length']}"
    if kind == "too_long":
        return f"expected at most {ctx['max_length']} items, got {ctx['actual_length']}"
    if kind == "invalid_key":
        return f"expected text keys, got {got}"
    return f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {got}"


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unknown_field(written: list[Segment], tree: YamlTree, root: type[BaseModel]) -> str:
    key = str(written[-1]) if written else "?"
    parent_written, parent, _ = tree.walk(written[:-1])
    present = {k.value for k, _ in pairs(parent) if isinstance(k, yaml.ScalarNode)} if isinstance(parent, yaml.MappingNode) else set()
    model = _model_at(parent_written, root)
    aliases = _aliases(model) if model else []
    normal = {normalize(a): a for a in aliases}
    if normalize(key) in normal and normal[normalize(key)] in present:
        return f"{key!r} is the same field as {normal[normalize(key)]!r}, given twice: keep one"
    close = suggest(key, [a for a in aliases if a not in present])
    if close:
        return f"unknown field {key!r} (did you mean {close!r}?)"
    if model is root and key in _aliases(_model_at(["spec"], root)):
        return f"unknown field {key!r} at the top level: it belongs under spec"
    return f"unknown field {key!r}: expected one of {', '.join(aliases)}"


def _aliases(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _flatten(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _flatten(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(tp) for t in _flatten(arg)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_at(path: Sequence[Segment], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model that a mapping at ``path`` (as written) is validated against."""
    current: list[Any] = [root]
    for segment in path:
        following: list[Any] = []
        for tp in current:
            if isinstance(segment, int) and get_origin(tp) is list:
                following += _flatten(get_args(tp)[0])
            elif isinstance(segment, str) and _is_model(tp):
                for name, field in tp.model_fields.items():
                    if segment in (name, field.alias):
                        following += _flatten(field.annotation)
        current = following
    return next((tp for tp in current if _is_model(tp)), None)


