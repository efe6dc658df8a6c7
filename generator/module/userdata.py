"""Cloud-init user data in a module directory: the documents, and the files they install.

kafkanet's user data is one ``#cloud-config`` YAML document per instance (no MIME
multipart). Its ``write_files`` entries carry the setup scripts and the systemd
units; this module finds the documents in a directory, extracts those entries and
maps a line of an entry's content back to the document's own line (possible when
the content is a literal block, ``content: |``, as kafkanet writes it). Pure but
for reading the files.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

CLOUD_CONFIG_HEADER = "#cloud-config"
USER_DATA_DIR = "user-data"
DEFAULT_MODE = 0o644  # cloud-init's default for write_files

SHELLS = frozenset({"sh", "bash", "dash", "ksh"})  # the dialects shellcheck knows
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount", ".automount", ".swap", ".target", ".slice")
_DROP_IN = re.compile(r"^(?P<unit>[^/]+)\.d/[^/]+\.conf$")


@dataclass(frozen=True)
class WriteFile:
    """One ``write_files`` entry: a file the document installs on the instance."""

    document: Path
    path: str  # where it goes on the instance
    content: str
    mode: int
    line: int  # the entry's first line in the document, 1-based
    content_line: int | None = None  # the document line of the content's line 1 (literal blocks only)

    def document_line(self, line: int) -> int | None:
        """The document's line holding line ``line`` (1-based) of the content, when that is known."""
        if self.content_line is None or not 1 <= line <= max(1, len(self.content.splitlines())):
            return None
        return self.content_line + line - 1

    @property
    def interpreter(self) -> str | None:
        """The shebang's interpreter, without directory (``#!/usr/bin/env bash`` gives ``bash``)."""
        first = self.content.split("\n", 1)[0]
        if not first.startswith("#!"):
            return None
        words = first[2:].split()
        if words and PurePosixPath(words[0]).name == "env":
            words = [w for w in words[1:] if not w.startswith("-")]
        return PurePosixPath(words[0]).name if words else None

    @property
    def is_shell_script(self) -> bool:
        return self.interpreter in SHELLS

    @property
    def is_python_script(self) -> bool:
        return (self.interpreter or "").startswith("python")

    def _under_unit_dir(self) -> str | None:
        """The path relative to a system unit directory, or None."""
        path = PurePosixPath(self.path)
        for directory in UNIT_DIRS:
            if path.is_relative_to(directory):
                return path.relative_to(directory).as_posix()
        return None

    @property
    def is_unit(self) -> bool:
        """A system unit file (``/etc/systemd/system/kafka.service``), not a drop-in."""
        rel = self._under_unit_dir()
        return rel is not None and "/" not in rel and rel.endswith(UNIT_SUFFIXES)

    @property
    def unit_name(self) -> str | None:
        """The unit this entry is or configures: its own name, or a drop-in's unit."""
        rel = self._under_unit_dir()
        if rel is None:
            return None
        if self.is_unit:
            return rel
        match = _DROP_IN.match(rel)
        return match["unit"] if match and match["unit"].endswith(UNIT_SUFFIXES) else None


@dataclass(frozen=True)
class UserData:
    """A cloud-config document: its text, its YAML (None when it does not parse) and entries."""

    path: Path
    text: str
    node: yaml.Node | None
    write_files: tuple[WriteFile, ...]

    @property
    def scripts(self) -> list[WriteFile]:
        return [entry for entry in self.write_files if entry.is_shell_script]

    @property
    def python_scripts(self) -> list[WriteFile]:
        return [entry for entry in self.write_files if entry.is_python_script]

    @property
    def units(self) -> list[WriteFile]:
        return [entry for entry in self.write_files if entry.unit_name is not None]

    def line_of(self, dotted: str) -> int | None:
        """The line (1-based) of a key path as cloud-init names it (``write_files.0.content``).

        The deepest part of the path that exists gives the line; None when not even
        the first does.
        """
        node, line = self.node, None
        for part in dotted.split(".") if dotted else []:
            found = _child(node, part)
            if found is None:
                break
            line, node = found
        return line


def _child(node: yaml.Node | None, part: str) -> tuple[int, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return key.start_mark.line + 1, value
    elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
        item = node.value[int(part)]
        return item.start_mark.line + 1, item
    return None


def _member(node: yaml.Node, key: str) -> yaml.Node | None:
    found = _child(node, key)
    return found[1] if found else None


def _mode(value: Any) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        return DEFAULT_MODE  # cloud-init's schema check reports the bad value


def _decode(content: Any, encoding: Any) -> tuple[str, bool] | None:
    """Content as text as cloud-init writes it, and whether it is the document's text as it stands."""
    kinds = {part.strip() for part in str(encoding or "").lower().split("+") if part.strip()}
    data: bytes
    if isinstance(content, bytes):  # !!binary
        data = content
    elif isinstance(content, str):
        if not kinds - {"text/plain"}:
            return content, True
        data = content.encode()
    else:
        return None
    try:
        if kinds & {"b64", "base64"} and not isinstance(content, bytes):
            data = base64.b64decode(data)
        if kinds & {"gz", "gzip"}:
            data = gzip.decompress(data)
    except (binascii.Error, OSError, EOFError):
        return None  # cloud-init would fail on it too; nothing to extract
    return data.decode("utf-8", "replace"), False


def _entries(path: Path, data: Any, node: yaml.Node) -> tuple[WriteFile, ...]:
    items = data.get("write_files") if isinstance(data, dict) else None
    nodes = _member(node, "write_files")
    if not isinstance(items, list) or not isinstance(nodes, yaml.SequenceNode) or len(nodes.value) != len(items):
        return ()
    out = []
    for item, item_node in zip(items, nodes.value):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            continue
        decoded = _decode(item.get("content", ""), item.get("encoding"))
        if decoded is None:
            continue
        text, as_written = decoded
        content_node = _member(item_node, "content")
        literal = as_written and isinstance(content_node, yaml.ScalarNode) and content_node.style == "|"
        out.append(WriteFile(
            document=path, path=item["path"], content=text, mode=_mode(item.get("permissions", DEFAULT_MODE)),
            line=item_node.start_mark.line + 1,
            # a literal block starts on the line after its "|"; its lines are the document's lines
            content_line=content_node.start_mark.line + 2 if literal else None,
        ))  # fmt: skip
    return tuple(out)


def load(path: Path) -> UserData:
    """Read one cloud-config document; a document that is not YAML has no entries (and no node)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return UserData(path, text, None, ())
    if node is None:
        return UserData(path, text, None, ())
    return UserData(path, text, node, _entries(path, data, node))


def _starts_with_header(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(CLOUD_CONFIG_HEADER)) == CLOUD_CONFIG_HEADER.encode()
    except OSError:
        return False


def documents(directory: Path) -> list[Path]:
    """Every cloud-config document of a module: each ``user-data/*.yaml`` (or ``.yml``),
    and any other file that starts with ``#cloud-config``; dot-directories
    (``.terraform``, ``.kafkanet``) are not looked into."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(root)
        in_user_data = here == directory / USER_DATA_DIR
        for name in sorted(files):
            path = here / name
            if (in_user_data and path.suffix in (".yaml", ".yml")) or _starts_with_header(path):
                found.append(path)
    return found


def load_all(directory: Path) -> list[UserData]:
    return [load(path) for path in documents(directory)]
