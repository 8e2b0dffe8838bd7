"""Where a value sits in a YAML file: follow a data path through the composed node tree.

pydantic reports a path into the data; the node tree knows the line of every key and value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml
from pydantic.alias_generators import to_camel, to_snake

Segment = str | int


def node_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _spellings(segment: Segment) -> tuple[str, ...]:
    # Keys are camelCase in the contract but snake_case is accepted: find either as written.
    text = str(segment)
    return (text, to_camel(text), to_snake(text))


def pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """The key/value pairs of a mapping, merge keys (``<<: *base``) expanded, last one wins."""
    out: list[tuple[yaml.Node, yaml.Node]] = []
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
            out[:0] = [p for m in merged if isinstance(m, yaml.MappingNode) for p in pairs(m)]
        else:
            out.append((key, value))
    return out


class YamlTree:
    """The composed YAML document: turns a data path into the line and the path as written."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root

    def walk(self, loc: Sequence[Segment], start: yaml.Node | None = None) -> tuple[list[Segment], yaml.Node, yaml.Node | None]:
        """Follow ``loc`` as far as it goes; segments that name nothing in the data (pydantic's
        union tags, ``[key]``) are skipped. Returns the path as written, the node reached and the
        key node that led to it (None when reached through a list index or not moved)."""
        node, key_node, written = start or self.root, None, []
        for segment in loc:
            if isinstance(node, yaml.MappingNode):
                found = next(
                    ((k, v) for k, v in reversed(pairs(node)) if isinstance(k, yaml.ScalarNode) and k.value in _spellings(segment)),
                    None,
                )
                if found is not None:
                    key_node, node = found
                    written.append(key_node.value)
            elif isinstance(node, yaml.SequenceNode) and isinstance(segment, int) and 0 <= segment < len(node.value):
                key_node, node = None, node.value[segment]
                written.append(segment)
        return written, node, key_node

    def locate(self, loc: Sequence[Segment]) -> tuple[int, str]:
        written, node, key_node = self.walk(loc)
        return self.line_of(node, key_node), render_path(written)

    @staticmethod
    def line_of(node: yaml.Node, key_node: yaml.Node | None) -> int:
        # A block mapping or list starts on the line after its key: point at the key.
        if key_node is not None and not isinstance(node, yaml.ScalarNode):
            return node_line(key_node)
        return node_line(node)

    def duplicate_keys(self) -> list[tuple[int, str, str]]:
        found: list[tuple[int, str, str]] = []
        seen: set[int] = set()

        def visit(node: yaml.Node, path: list[Segment]) -> None:
            if id(node) in seen:
                return
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                first: dict[str, int] = {}
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                        if key.value in first:
                            message = f"duplicate key {key.value!r} (first at line {first[key.value]}): YAML would keep only the last"
                            found.append((node_line(key), render_path([*path, key.value]), message))
                        first.setdefault(key.value, node_line(key))
                        visit(value, [*path, key.value])
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    visit(item, [*path, i])

        visit(self.root, [])
        return found


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def render_path(path: Sequence[Segment]) -> str:
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif not _PLAIN_KEY.match(segment):
            out += f"[{segment!r}]"
        else:
            out += f".{segment}" if out else segment
    return out
