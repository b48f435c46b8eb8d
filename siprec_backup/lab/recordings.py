"""Lab data: the recordings tree the lab's PostgreSQL rows describe.

What: :func:`write_recordings` reads ``siprec.recordings`` (and each session's RFC 7865 XML from
``siprec.recording_sessions.metadata_xml``) from the lab database, writes every audio file and
every session's metadata XML under a root directory, then updates the rows' ``size_bytes`` and
``sha256`` to the real files' values, so that the database references exactly these files.

Content is plausible, not silent: WAV files are a RIFF/WAVE header and 16-bit PCM whose samples
follow a skewed distribution with pauses (zstd shrinks it to roughly half, like speech); opus and
mp4 files are random bytes behind a plausible header (incompressible, like real compressed
audio). Everything derives from the file path, so the same rows give the same bytes.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from siprec_backup.errors import LabError

#: Rows fetched and updated per round trip.
BATCH = 2000
#: Audio sizes at scale 1: 4 KiB to 36 KiB.
MIN_AUDIO = 4 << 10
SPAN_AUDIO = 32 << 10

_SELECT = """
SELECT r.id, r.file_path, r.format, r.metadata_path, s.metadata_xml
FROM siprec.recordings r JOIN siprec.recording_sessions s ON s.id = r.session_id
ORDER BY r.id
"""
_UPDATE = """
UPDATE siprec.recordings AS r SET size_bytes = v.size, sha256 = v.sha
FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, size, sha)
WHERE r.id = v.id
"""

# Speech-like sample magnitudes: mostly small values, a few loud ones (a fixed table, so
# bytes.translate maps uniform random bytes to this distribution at C speed).
_LOW = bytes((i * i * 7 // 255) % 256 if i < 200 else (i * 37) % 256 for i in range(256))
_HIGH = bytes(0x00 if i < 120 else 0xFF if i < 240 else (i * 13) % 256 for i in range(256))


@dataclass(frozen=True)
class WrittenRecordings:
    """What :func:`write_recordings` wrote."""

    audio_files: int
    metadata_files: int
    bytes: int


def _rng(path: str) -> random.Random:
    seed = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return random.Random(seed)  # noqa: S311 - test data, deterministic on purpose


def wav_bytes(size: int, rng: random.Random) -> bytes:
    """A RIFF/WAVE file of `size` bytes (>= 44): 8 kHz mono 16-bit PCM, speech-like."""
    frames = max(0, size - 44) // 2
    pcm = bytearray(frames * 2)
    pcm[0::2] = rng.randbytes(frames).translate(_LOW)
    pcm[1::2] = rng.randbytes(frames).translate(_HIGH)
    # Pauses between words: stretches of near-silence.
    pos = 0
    while pos < frames:
        pos += rng.randrange(2000, 12000)
        pause = min(rng.randrange(400, 4000), frames - pos) if pos < frames else 0
        pcm[2 * pos : 2 * (pos + pause)] = b"\x00\x00" * pause
        pos += pause
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        8000,
        16000,
        2,
        16,
        b"data",
        len(pcm),
    )
    body = header + bytes(pcm)
    return body + rng.randbytes(size - len(body)) if len(body) < size else body


def compressed_audio_bytes(size: int, rng: random.Random, fmt: str) -> bytes:
    """`size` incompressible bytes behind an Ogg ("OggS") or MP4 ("ftyp") signature."""
    head = b"OggS\x00\x02" if fmt == "opus" else b"\x00\x00\x00\x18ftypisom"
    return (head + rng.randbytes(max(0, size - len(head))))[:size]


def audio_bytes(path: str, fmt: str, scale: float = 1.0) -> bytes:
    """The deterministic content of the audio file `path` of format `fmt` (wav, opus, mp4)."""
    rng = _rng(path)
    size = max(64, int(scale * (MIN_AUDIO + rng.randrange(SPAN_AUDIO))))
    if fmt == "wav":
        return wav_bytes(size, rng)
    return compressed_audio_bytes(size, rng, fmt)


def _rows(
    conn: psycopg.Connection[tuple[int, str, str, str, str]], max_files: int | None
) -> Iterator[tuple[int, str, str, str, str]]:
    query = _SELECT + (" LIMIT %s" if max_files is not None else "")
    with conn.cursor(name="siprec_recordings") as cur:
        cur.itersize = BATCH
        cur.execute(query, (max_files,) if max_files is not None else None)
        yield from cur


def write_recordings(
    conninfo: str, root: Path, *, max_files: int | None = None, scale: float = 1.0
) -> WrittenRecordings:
    """Write the audio files of the first `max_files` recordings rows (all if None) and their
    sessions' metadata XML under `root`, then store the real sizes and sha256 in those rows.

    `scale` multiplies audio sizes (4-36 KiB at 1.0). Returns the counts written.
    """
    root = Path(root)
    audio = xml = total = 0
    written_xml: set[str] = set()
    updates: tuple[list[int], list[int], list[str]] = ([], [], [])
    try:
        with psycopg.connect(conninfo) as conn, psycopg.connect(conninfo) as writer:
            for row_id, file_path, fmt, metadata_path, metadata_xml in _rows(conn, max_files):
                data = audio_bytes(file_path, fmt, scale)
                _write(root, file_path, data)
                audio += 1
                total += len(data)
                updates[0].append(row_id)
                updates[1].append(len(data))
                updates[2].append(hashlib.sha256(data).hexdigest())
                if metadata_path not in written_xml:
                    written_xml.add(metadata_path)
                    doc = metadata_xml.encode()
                    _write(root, metadata_path, doc)
                    xml += 1
                    total += len(doc)
                if len(updates[0]) >= BATCH:
                    writer.execute(_UPDATE, updates)
                    writer.commit()
                    updates = ([], [], [])
            if updates[0]:
                writer.execute(_UPDATE, updates)
                writer.commit()
    except psycopg.Error as exc:
        raise LabError(f"writing the lab recordings failed: {exc}") from exc
    return WrittenRecordings(audio_files=audio, metadata_files=xml, bytes=total)


def drop_rows_past(conninfo: str, max_files: int) -> int:
    """Delete the recordings rows after the first `max_files` (those :func:`write_recordings`
    wrote no file for); returns how many were deleted."""
    try:
        with psycopg.connect(conninfo) as conn:
            cur = conn.execute(
                "DELETE FROM siprec.recordings WHERE id > (SELECT max(id) FROM "
                "(SELECT id FROM siprec.recordings ORDER BY id LIMIT %s) AS kept)",
                (max_files,),
            )
            return cur.rowcount
    except psycopg.Error as exc:
        raise LabError(f"dropping the lab's recordings rows without files failed: {exc}") from exc


def _write(root: Path, rel: str, data: bytes) -> None:
    if rel.startswith("/") or ".." in rel.split("/"):
        raise LabError(f"refusing to write outside the recordings root: {rel!r}")
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
