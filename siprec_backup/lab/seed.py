"""Seed data for the lab: the SIPREC schema and a fast, realistic filler.

:func:`fill` grows the ``siprec`` schema to about a target size (tables + TOAST + indexes, as
``pg_total_relation_size`` counts it) entirely server-side: each batch is one transaction of
``INSERT ... SELECT ... FROM generate_series(...)`` statements. Values are derived
deterministically from the session id with hash functions, so the rows vary like real ones
(uuids, E.164 numbers, agents, codecs, an RFC 7865 XML metadata document of 1-2 KB per session)
and a session's XML agrees with its participant and stream rows; the data compresses like real
data, not like zeros.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

from siprec_backup.errors import LabError

SCHEMA = "siprec"
TABLES = ("recording_sessions", "participants", "media_streams", "recordings")
#: Sessions per INSERT statement (memory stays small; progress is reported per batch).
BATCH_SESSIONS = 50_000
#: Children of session g get ids g * CHILD_IDS + k (k < CHILD_IDS): stable and collision free.
CHILD_IDS = 4

_FIRST = (
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert "
    "Sybil Trent Victor Walter Yasmin Zoe Amir Beatriz Chen Dario Eun-ji Farah Goran Hana "
    "Ines"
)
_LAST = (
    "Smith Garcia Müller Rossi Nguyen Kowalski Silva Novak Tanaka Dubois Jensen Okafor "
    "Haddad Ivanova Larsen Moreau Schmidt Costa Yilmaz Kim Patel Cohen Hansen Lopez Santos "
    "Fischer Bianchi Nowak Sato Martin"
)


def _array(words: str) -> str:
    """A SQL text array literal of the space-separated ``words``."""
    return "ARRAY[" + ",".join("'" + w.replace("'", "''") + "'" for w in words.split()) + "]"


def _h(n: int) -> str:
    """A non-negative pseudo-random bigint derived from the session id ``g`` (seeded)."""
    return f"abs(hashint8extended(g, {n}))"


# Per-session values, computed once per row of generate_series (column ``g``).
_SESSION_COLUMNS = f"""
    g,
    md5('rs' || g)::uuid AS su,
    md5('call' || g) || '@sbc' || (g % 3 + 1) || '.carrier.example.com' AS call_id,
    timestamptz '2026-01-01 00:00:00+00' + g * interval '9 seconds' AS t0,
    4000 + {_h(1)} % 1200000 AS dur,
    CASE {_h(2)} % 100 WHEN 0 THEN 'failed' WHEN 1 THEN 'active' ELSE 'completed' END AS state,
    'srs-' || (g % 4 + 1) || '.rec.example.net' AS node,
    2 + (g % 5 = 0)::int AS nparts,
    2 + (g % 20 = 0)::int AS nstreams,
    (ARRAY['PCMU','PCMA','G722','opus'])[1 + g % 4] AS acodec
"""

# Participants of session g (the first ``nparts`` rows).
_PARTICIPANTS = f"""(VALUES
    (0, 'caller', 'inbound', true, true, '1', '2',
     'sip:+1' || (2000000000 + {_h(3)} % 7999999999) || '@pstn.carrier.example.com',
     ({_array(_FIRST)})[1 + {_h(5)} % {len(_FIRST.split())}] || ' '
       || ({_array(_LAST)})[1 + {_h(6)} % {len(_LAST.split())}]),
    (1, 'agent', 'outbound', true, true, '2', '1',
     'sip:agent' || lpad(({_h(4)} % 2000)::text, 4, '0') || '@cc.example.com',
     'Agent ' || lpad(({_h(4)} % 2000)::text, 4, '0')),
    (2, 'supervisor', 'internal', false, true, NULL, '1',
     'sip:supervisor' || (g % 40) || '@cc.example.com', 'Supervisor ' || (g % 40))
) AS p(k, role, direction, sends, receives, send_label, recv_label, aor, display_name)"""

# Media streams of session g (the first ``nstreams`` rows): two audio directions, maybe video.
_STREAMS = """(VALUES
    (0, '1', 'audio', acodec), (1, '2', 'audio', acodec), (2, '3', 'video', 'H264')
) AS st(k, label, media_type, codec)"""

_PT = (
    "CASE st.codec WHEN 'PCMU' THEN 0 WHEN 'PCMA' THEN 8 WHEN 'G722' THEN 9 "
    "WHEN 'opus' THEN 111 ELSE 96 END"
)
_CLOCK = "CASE st.codec WHEN 'opus' THEN 48000 WHEN 'H264' THEN 90000 ELSE 8000 END"
_FORMAT = (
    "CASE WHEN st.media_type = 'video' THEN 'mp4' WHEN st.codec = 'opus' THEN 'opus' ELSE 'wav' END"
)
# Bytes per millisecond of each format: G.711 8 kB/s, G.722 16 kB/s, Opus 4 kB/s, video 1 Mbit/s.
_BYTES_PER_MS = (
    "CASE WHEN st.media_type = 'video' THEN 125 WHEN st.codec = 'opus' THEN 4 "
    "WHEN st.codec = 'G722' THEN 16 ELSE 8 END"
)
_DAY_DIR = "'recordings/' || to_char(t0 AT TIME ZONE 'UTC', 'YYYY/MM/DD') || '/' || su"
_ISO = "to_char(t0 AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1">\n'
    "  <datamode>complete</datamode>\n"
    '  <group group_id="%1$s">\n'
    "    <associate-time>%2$s</associate-time>\n"
    "  </group>\n"
    '  <session session_id="%3$s">\n'
    "    <group-ref>%1$s</group-ref>\n"
    "    <sipSessionID>%4$s</sipSessionID>\n"
    "    <start-time>%2$s</start-time>\n"
    "  </session>\n"
    "%5$s\n%6$s\n"
    '  <sessionrecordingassoc session_id="%3$s">\n'
    "    <associate-time>%2$s</associate-time>\n"
    "  </sessionrecordingassoc>\n"
    "%7$s\n"
    "</recording>\n"
)

_INSERT_SESSIONS = f"""
INSERT INTO siprec.recording_sessions
    (id, session_uuid, call_id, started_at, ended_at, state, recorder_node, metadata_xml)
SELECT g, su, call_id, t0,
       CASE WHEN state = 'active' THEN NULL ELSE t0 + dur * interval '1 millisecond' END,
       state, node,
       format({{xml}}, md5('grp' || (g / 3)), {_ISO}, su,
              md5('sip' || g) || ';remote=' || md5('remote' || g), px.parts, sx.streams, px.assoc)
FROM (SELECT {_SESSION_COLUMNS} FROM generate_series({{lo}}::bigint, {{hi}}::bigint) AS g) AS s
CROSS JOIN LATERAL (
    SELECT string_agg(format(
               E'  <participant participant_id="%s">\\n    <nameID aor="%s">\\n' ||
               E'      <name xml:lang="en">%s</name>\\n    </nameID>\\n  </participant>',
               md5('pa' || g || ':' || p.k)::uuid, p.aor, p.display_name), E'\\n' ORDER BY p.k)
               AS parts,
           string_agg(format(
               E'  <participantstreamassoc participant_id="%s">\\n%s' ||
               E'    <recv>%s</recv>\\n  </participantstreamassoc>',
               md5('pa' || g || ':' || p.k)::uuid,
               CASE WHEN p.send_label IS NULL THEN ''
                    ELSE format(E'    <send>%s</send>\\n',
                                md5('st' || g || ':' || (p.send_label::int - 1))::uuid) END,
               md5('st' || g || ':' || (p.recv_label::int - 1))::uuid), E'\\n' ORDER BY p.k)
               AS assoc
    FROM {_PARTICIPANTS}
    WHERE p.k < s.nparts
) AS px
CROSS JOIN LATERAL (
    SELECT string_agg(format(
               E'  <stream stream_id="%s" session_id="%s">\\n    <label>%s</label>\\n  </stream>',
               md5('st' || g || ':' || st.k)::uuid, su, st.label), E'\\n' ORDER BY st.k) AS streams
    FROM {_STREAMS}
    WHERE st.k < s.nstreams
) AS sx
"""

_INSERT_PARTICIPANTS = f"""
INSERT INTO siprec.participants
    (id, session_id, participant_uuid, aor, display_name, role, direction, sends, receives)
SELECT g * {CHILD_IDS} + p.k, g, md5('pa' || g || ':' || p.k)::uuid, p.aor, p.display_name,
       p.role, p.direction, p.sends, p.receives
FROM (SELECT {_SESSION_COLUMNS} FROM generate_series({{lo}}::bigint, {{hi}}::bigint) AS g) AS s
CROSS JOIN LATERAL {_PARTICIPANTS}
WHERE p.k < s.nparts
"""

_INSERT_STREAMS = f"""
INSERT INTO siprec.media_streams
    (id, session_id, stream_uuid, label, media_type, codec, sdp, local_port, remote_port)
SELECT g * {CHILD_IDS} + st.k, g, md5('st' || g || ':' || st.k)::uuid, st.label, st.media_type,
       st.codec,
       format(E'm=%s %s RTP/AVP %s\\r\\nc=IN IP4 10.%s.%s.%s\\r\\na=rtpmap:%s %s/%s\\r\\n' ||
              E'a=label:%s\\r\\na=sendonly\\r\\na=ssrc:%s cname:%s\\r\\n',
              st.media_type, 20000 + (g * 6 + st.k * 2) % 40000, {_PT},
              {_h(7)} % 256, {_h(8)} % 256, 1 + {_h(9)} % 254,
              {_PT}, st.codec, {_CLOCK}, st.label, ({_h(10)} + st.k * 7919) % 4294967295,
              substr(md5('cname' || g), 1, 16)),
       20000 + (g * 6 + st.k * 2) % 40000,
       10000 + ({_h(11)} + st.k * 2) % 20000 * 2
FROM (SELECT {_SESSION_COLUMNS} FROM generate_series({{lo}}::bigint, {{hi}}::bigint) AS g) AS s
CROSS JOIN LATERAL {_STREAMS}
WHERE st.k < s.nstreams
"""

_INSERT_RECORDINGS = f"""
INSERT INTO siprec.recordings
    (id, session_id, stream_id, file_path, size_bytes, sha256, format, duration_ms, metadata_path)
SELECT g * {CHILD_IDS} + st.k, g, g * {CHILD_IDS} + st.k,
       {_DAY_DIR} || '-' || st.label || '.' || {_FORMAT},
       44 + dur * {_BYTES_PER_MS},
       md5('a' || g || ':' || st.k) || md5('b' || g || ':' || st.k),
       {_FORMAT}, dur, {_DAY_DIR} || '.xml'
FROM (SELECT {_SESSION_COLUMNS} FROM generate_series({{lo}}::bigint, {{hi}}::bigint) AS g) AS s
CROSS JOIN LATERAL {_STREAMS}
WHERE st.k < s.nstreams AND s.state <> 'failed'
"""

_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm')
"""


@dataclass
class SeedStats:
    """What :func:`fill` left in the schema: exact rows per table and total bytes."""

    rows: dict[str, int]
    bytes: int
    sessions_added: int = 0
    seconds: float = 0.0
    batches: list[float] = field(default_factory=list, repr=False)

    @property
    def mb(self) -> float:
        """Total size in MiB."""
        return self.bytes / (1024 * 1024)


def create_schema(conninfo: str) -> None:
    """Create the ``siprec`` schema, tables and indexes (idempotent)."""
    ddl = resources.files("siprec_backup.lab").joinpath("siprec_schema.sql").read_text()
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(ddl.encode())
    except psycopg.Error as exc:
        raise LabError(f"creating the siprec schema failed: {exc}") from exc


def schema_bytes(conninfo: str) -> int:
    """Total size of the ``siprec`` schema's tables, TOAST and indexes, in bytes."""
    with psycopg.connect(conninfo) as conn:
        return _schema_bytes(conn)


def _schema_bytes(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute(_SIZE, (SCHEMA,)).fetchone()
    return int(row[0]) if row else 0


def _batch(conn: psycopg.Connection[tuple[int]], lo: int, hi: int) -> None:
    params = {"lo": sql.Literal(lo), "hi": sql.Literal(hi), "xml": sql.Literal(_XML)}
    with conn.transaction():
        for stmt in (_INSERT_SESSIONS, _INSERT_PARTICIPANTS, _INSERT_STREAMS, _INSERT_RECORDINGS):
            conn.execute(sql.SQL(stmt).format(**params))


def fill(
    conninfo: str,
    target_mb: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> SeedStats:
    """Add recording sessions until the schema holds about ``target_mb`` MiB.

    Does nothing if the schema is already that big. ``progress`` receives the schema size in
    bytes after each batch. Returns exact row counts and the final size.
    """
    target = target_mb * 1024 * 1024
    t0 = time.monotonic()
    added = 0
    batches: list[float] = []
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            size = _schema_bytes(conn)
            row = conn.execute(
                "SELECT coalesce(max(id), 0) FROM siprec.recording_sessions"
            ).fetchone()
            next_id = int(row[0]) + 1 if row else 1
            per_session = 4200.0  # bytes; measured by a small first batch, then re-estimated
            calibrated = False
            while target - size > max(per_session, target * 0.005):
                n = int((target - size) / per_session) + 1
                n = max(100, min(BATCH_SESSIONS if calibrated else 1000, n))
                calibrated = True
                b0 = time.monotonic()
                _batch(conn, next_id, next_id + n - 1)
                batches.append(time.monotonic() - b0)
                next_id += n
                added += n
                new_size = _schema_bytes(conn)
                if new_size > size:
                    per_session = max(500.0, (new_size - size) / n)
                size = new_size
                if progress is not None:
                    progress(size)
            if added:
                _sync_identities(conn)
                conn.execute(
                    "ANALYZE siprec.recording_sessions, siprec.participants,"
                    " siprec.media_streams, siprec.recordings"
                )
            size = _schema_bytes(conn)
    except psycopg.Error as exc:
        raise LabError(f"filling the siprec schema failed: {exc}") from exc
    return SeedStats(
        rows=row_counts(conninfo),
        bytes=size,
        sessions_added=added,
        seconds=time.monotonic() - t0,
        batches=batches,
    )


def _sync_identities(conn: psycopg.Connection[tuple[int]]) -> None:
    """Move each identity sequence past the explicit ids the filler inserted."""
    for table in TABLES:
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({qualified}, 'id'),"
                " (SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            ).format(
                qualified=sql.Literal(f"{SCHEMA}.{table}"),
                table=sql.Identifier(SCHEMA, table),
            )
        )


def row_counts(conninfo: str) -> dict[str, int]:
    """Exact ``count(*)`` of every table of the ``siprec`` schema, from one snapshot."""
    try:
        with psycopg.connect(conninfo) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            names = [
                str(r[0])
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY table_name",
                    (SCHEMA,),
                )
            ]
            counts: dict[str, int] = {}
            for name in names:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, name))
                ).fetchone()
                counts[name] = int(row[0]) if row else 0
            return counts
    except psycopg.Error as exc:
        raise LabError(f"counting rows of the siprec schema failed: {exc}") from exc
