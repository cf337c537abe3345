"""Config files read strictly: a duplicate key, a repeated section, an empty file or a file that is not
a mapping is an error naming the file (and the key and its lines), never a silent default.

    from rlaifv_core.config_yaml import ConfigFileError, read_config_file
    data = read_config_file("configs/shapes.yaml")   # a dict; raises ConfigFileError naming the fault

YAML itself lets a later key replace an earlier one in the same mapping (`yaml.safe_load` keeps the
last); in a config that is almost always a pasted section or a typo, so it is refused. Merge keys
(`<<: *anchor`) still work: a key may override what a merge brought in.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigFileError(ValueError):
    """A config file that cannot be used as given: empty, not a mapping, not YAML, or with a key twice."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first_line: int, line: int):
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first_line}); "
                         f"a repeated key or section would silently replace the first one")


class StrictLoader(yaml.SafeLoader):
    """yaml's SafeLoader, except that a key given twice in one mapping is an error naming it and its lines."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if first != key_node.start_mark.line + 1:
                    raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def load_strict(text: str):
    """The YAML document in `text`, refusing duplicate keys (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def read_config_file(path: str | Path) -> dict:
    """A config file's top-level mapping. ConfigFileError names the file for a file that is empty (or only
    comments), is not a mapping, is not UTF-8 or YAML, or has a key or section twice (with the lines)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigFileError(f"{path}: not UTF-8 (byte {error.start}): {error.reason}") from error
    try:
        data = load_strict(text)
    except _DuplicateKey as error:
        raise ConfigFileError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{path}: not valid YAML: {error}") from error
    if data is None:
        raise ConfigFileError(f"{path}: the config file is empty (no settings at all); "
                              f"a config file must be a YAML mapping of sections")
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: a config file must be a YAML mapping of sections, "
                              f"not a {type(data).__name__}")
    return data
