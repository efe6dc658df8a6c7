"""Reading cloud-init user data as EC2 returns it: base64, maybe gzip, plain or MIME multi-part.

Owns what the plane needs of an instance's user data: the text behind
``describe_instance_attribute``'s base64 (gzip undone) and the files its
``#cloud-config`` documents' ``write_files`` would write (every encoding
cloud-init accepts), so that the translation can find the NAT's setup script.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import email
import gzip
from collections.abc import Mapping
from typing import Any

import yaml


def decode_user_data(value: str | None) -> str | None:
    """The user data text from describe_instance_attribute's base64 (gzip undone)."""
    if not value:
        return None
    try:
        raw = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        return None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", "replace")


def _cloud_configs(text: str) -> list[str]:
    """The ``#cloud-config`` documents in plain or MIME multi-part user data."""
    if text.lstrip().startswith("#cloud-config"):
        return [text]
    if "multipart" not in text[:2000].lower():
        return []
    message = email.message_from_string(text)
    found = []
    for part in message.walk():
        if part.get_content_type() == "text/cloud-config":
            payload = part.get_payload(decode=True)
            if payload:
                found.append(payload.decode("utf-8", "replace"))
    return found


def _decode_content(entry: Mapping[str, Any]) -> str:
    content = entry.get("content", "")
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    encoding = str(entry.get("encoding", "text/plain")).lower()
    data: bytes = str(content).encode()
    if encoding in ("b64", "base64", "gz+b64", "gz+base64", "gzip+b64", "gzip+base64"):
        data = base64.b64decode(data)
    if encoding in ("gz", "gzip", "gz+b64", "gz+base64", "gzip+b64", "gzip+base64"):
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


def write_files(user_data: str | None) -> dict[str, str]:
    """``{path: content}`` of cloud-init's write_files; ValueError when the YAML is broken."""
    if not user_data:
        return {}
    files: dict[str, str] = {}
    for document in _cloud_configs(user_data):
        try:
            parsed = yaml.safe_load(document)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid cloud-config YAML: {exc}".splitlines()[0]) from None
        if not isinstance(parsed, Mapping):
            raise ValueError("cloud-config is not a mapping")
        for entry in parsed.get("write_files") or []:
            if isinstance(entry, Mapping) and entry.get("path"):
                files[str(entry["path"])] = _decode_content(entry)
    return files
