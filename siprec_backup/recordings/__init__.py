"""Recording files: incremental, content-addressed backup of a SIPREC recordings tree.

A recorder writes per session its media files (``<uuid>-1.wav``, ``<uuid>-2.opus``...) and its
RFC 7865 metadata XML (``<uuid>.xml``). :func:`run_recordings_backup` stores only content not
already stored by the previous backup, in two packs (zstd for compressible data, none for
already-compressed audio) plus an encrypted file index; :func:`run_recordings_restore` proves
every restored file against the index. Layout and index format: docs/RECORDINGS.md.
"""

from siprec_backup.recordings.backup import (
    DEFAULT_COMPRESSED_EXTENSIONS,
    SOURCE_KIND,
    run_recordings_backup,
)
from siprec_backup.recordings.index import INDEX_FORMAT, IndexEntry, read_index
from siprec_backup.recordings.metadata import (
    MetadataError,
    MetadataParser,
    RecordingMetadata,
    parse_metadata,
)
from siprec_backup.recordings.restore import run_recordings_restore
from siprec_backup.recordings.scan import FileChangedError, ScannedFile, scan_tree

__all__ = [
    "DEFAULT_COMPRESSED_EXTENSIONS",
    "INDEX_FORMAT",
    "SOURCE_KIND",
    "FileChangedError",
    "IndexEntry",
    "MetadataError",
    "MetadataParser",
    "RecordingMetadata",
    "ScannedFile",
    "parse_metadata",
    "read_index",
    "run_recordings_backup",
    "run_recordings_restore",
    "scan_tree",
]
