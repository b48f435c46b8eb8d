"""RFC 7865 recording metadata: the ids a backup index keeps of each session's XML document.

What: :class:`MetadataParser` takes a metadata document in pieces (as the backup reads the file
for hashing, so the XML is read once) and returns a :class:`RecordingMetadata` with the group,
session, SIP session, participant (AoR) and stream ids. Why: the index must tell which recording
and session each file belongs to without a restore.

Parsing goes through defusedxml with DTDs forbidden: no entity expansion (no "billion laughs"),
no external entities, no network. Documents above :data:`MAX_METADATA_BYTES` are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from siprec_backup.errors import SourceError

NAMESPACE = "urn:ietf:params:xml:ns:recording:1"
#: Metadata documents are 1-10 KB; anything far larger is not one.
MAX_METADATA_BYTES = 1 << 20

_NS = "{" + NAMESPACE + "}"


class MetadataError(SourceError):
    """A metadata document is not a readable RFC 7865 recording document."""


@dataclass(frozen=True)
class RecordingMetadata:
    """The ids of one RFC 7865 ``<recording>`` document."""

    datamode: str | None
    group_ids: tuple[str, ...]
    session_ids: tuple[str, ...]
    sip_session_ids: tuple[str, ...]
    participant_ids: tuple[str, ...]
    aors: tuple[str, ...]
    stream_ids: tuple[str, ...]


class MetadataParser:
    """Incremental, defused parser of one document: ``feed`` pieces, then ``close``."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._parser = DefusedXMLParser(forbid_dtd=True, forbid_entities=True)
        self._size = 0
        self._error: str | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse the next piece; errors are kept and raised by :meth:`close`."""
        if self._error is not None:
            return
        self._size += len(data)
        if self._size > MAX_METADATA_BYTES:
            self._error = f"larger than {MAX_METADATA_BYTES} bytes"
            return
        try:
            self._parser.feed(bytes(data))
        except (ParseError, DefusedXmlException, ValueError) as exc:
            self._error = _describe(exc)

    def close(self) -> RecordingMetadata:
        """The document's ids; MetadataError naming the file and the problem otherwise."""
        if self._error is None:
            try:
                root = self._parser.close()
            except (ParseError, DefusedXmlException, ValueError) as exc:
                self._error = _describe(exc)
            else:
                return _extract(root, self._where)
        raise MetadataError(f"metadata {self._where}: {self._error}")


def parse_metadata(data: bytes, where: str = "document") -> RecordingMetadata:
    """Parse one whole document (tests, small callers)."""
    parser = MetadataParser(where)
    parser.feed(data)
    return parser.close()


def parse_metadata_file(path: Path, where: str | None = None) -> RecordingMetadata:
    """Parse one document from a file, read in 64 KiB pieces (a restore verification's check)."""
    parser = MetadataParser(where or str(path))
    with path.open("rb") as handle:
        while data := handle.read(1 << 16):
            parser.feed(data)
    return parser.close()


def _describe(exc: Exception) -> str:
    if isinstance(exc, DefusedXmlException):
        return f"refused unsafe XML ({type(exc).__name__})"
    return f"not well-formed XML ({exc})"


def _extract(root: Element, where: str) -> RecordingMetadata:
    if root.tag != _NS + "recording":
        raise MetadataError(
            f"metadata {where}: root element is {root.tag!r}, expected <recording> in "
            f"namespace {NAMESPACE}"
        )

    def attrs(tag: str, attr: str) -> tuple[str, ...]:
        return tuple(e.get(attr, "") for e in root.iter(_NS + tag) if e.get(attr))

    datamode = root.find(_NS + "datamode")
    return RecordingMetadata(
        datamode=(datamode.text or "").strip() if datamode is not None else None,
        group_ids=attrs("group", "group_id"),
        session_ids=attrs("session", "session_id"),
        sip_session_ids=tuple(
            (e.text or "").strip() for e in root.iter(_NS + "sipSessionID") if e.text
        ),
        participant_ids=attrs("participant", "participant_id"),
        aors=attrs("nameID", "aor"),
        stream_ids=attrs("stream", "stream_id"),
    )
