"""YAML parsing for spec, catalog and prompt files: safe loading (libyaml's parser where installed), YAML 1.2
floats, one-line errors, bounded size and nesting."""

from __future__ import annotations

import re
from typing import Any

import yaml

from registry.errors import SpecError


# libyaml's C parser when PyYAML was built with it (the usual wheel): the same documents, several times faster
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_YAML_BYTES = 1 << 20  # a spec, catalog or prompt file larger than this is refused, unread
MAX_NESTING = 64  # deeper mappings and lists than any spec needs are refused before they are built


class _SpecYamlLoader(_BASE_LOADER):
    """Safe loader that also reads '1e-5' and '2e-05' as floats (YAML 1.2 does; 1.1 does not)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_SpecYamlLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecYamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _nesting_depth(root) -> int:
    """How deeply the composed YAML node `root` nests collections. Iterative, and each node (an alias shares its
    anchor's node) is measured once, so neither deep nesting nor alias bombs cost more than the node count."""
    def children(node) -> list:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            kids = children(node)
            depth[id(node)] = 1 + max((depth[id(k)] for k in kids), default=0) if kids else 0
            continue
        if id(node) in depth:
            continue
        if id(node) in open_nodes:
            raise SpecError("an alias refers to a collection that contains it (a recursive structure)")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((kid, False) for kid in children(node) if id(kid) not in depth)
    return depth[id(root)]


def parse_yaml(text: str, where: str) -> Any:
    if len(text) > MAX_YAML_BYTES:
        raise SpecError(f"{len(text):,} characters: YAML files are limited to {MAX_YAML_BYTES:,}", where)
    loader = _SpecYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _nesting_depth(node) > MAX_NESTING:
            raise SpecError(f"nested more than {MAX_NESTING} levels deep", where)
        return loader.construct_document(node)
    except SpecError as exc:
        raise exc.located(where) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"YAML syntax error: {problem}", place) from None
    except RecursionError:
        raise SpecError(f"nested more than {MAX_NESTING} levels deep", where) from None
    finally:
        loader.dispose()
