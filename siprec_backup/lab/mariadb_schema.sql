-- The lab's SIPREC recording-server schema for MariaDB: the same four tables as the PostgreSQL
-- schema (siprec_schema.sql), plus one stored procedure, one trigger and one event, so that the
-- tests prove routines, triggers and events travel through a backup and a restore.
-- Run as the application user (it becomes their DEFINER) with multi-statements on: the server
-- parses the BEGIN ... END bodies itself, so no client DELIMITER is needed. Idempotent.

CREATE TABLE IF NOT EXISTS recording_sessions (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session_uuid    CHAR(36)     CHARACTER SET ascii NOT NULL UNIQUE,  -- RFC 7865 session_id
    call_id         VARCHAR(255) NOT NULL,                             -- SIP Call-ID
    started_at      DATETIME(6)  NOT NULL,
    ended_at        DATETIME(6)  NULL,
    state           VARCHAR(16)  NOT NULL
        CHECK (state IN ('active', 'paused', 'completed', 'failed')),
    recorder_node   VARCHAR(255) NOT NULL,           -- the SRS node that handled the session
    metadata_xml    MEDIUMTEXT   NOT NULL,           -- application/rs-metadata+xml from the SRC
    KEY recording_sessions_started_at_idx (started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS participants (
    id               BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session_id       BIGINT       NOT NULL,
    participant_uuid CHAR(36)     CHARACTER SET ascii NOT NULL,        -- RFC 7865 participant_id
    aor              VARCHAR(255) NOT NULL,                            -- SIP URI (nameID aor)
    display_name     VARCHAR(255) NULL,
    role             VARCHAR(16)  NOT NULL
        CHECK (role IN ('caller', 'callee', 'agent', 'supervisor')),
    direction        VARCHAR(16)  NOT NULL
        CHECK (direction IN ('inbound', 'outbound', 'internal')),
    sends            BOOLEAN      NOT NULL,
    receives         BOOLEAN      NOT NULL,
    KEY participants_aor_idx (aor),
    CONSTRAINT participants_session_fk FOREIGN KEY (session_id)
        REFERENCES recording_sessions (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS media_streams (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session_id   BIGINT       NOT NULL,
    stream_uuid  CHAR(36)     CHARACTER SET ascii NOT NULL,            -- RFC 7865 stream_id
    label        VARCHAR(32)  NOT NULL,                 -- SDP a=label, links metadata to media
    media_type   VARCHAR(8)   NOT NULL CHECK (media_type IN ('audio', 'video')),
    codec        VARCHAR(16)  NOT NULL,
    sdp          TEXT         NOT NULL,                 -- the stream's SDP media description
    local_port   INT          NOT NULL,
    remote_port  INT          NOT NULL,
    CONSTRAINT media_streams_session_fk FOREIGN KEY (session_id)
        REFERENCES recording_sessions (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS recordings (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session_id     BIGINT       NOT NULL,
    stream_id      BIGINT       NOT NULL,
    file_path      VARCHAR(512) CHARACTER SET ascii NOT NULL UNIQUE,
    size_bytes     BIGINT       NOT NULL CHECK (size_bytes >= 0),
    sha256         CHAR(64)     CHARACTER SET ascii NOT NULL
        CHECK (sha256 REGEXP '^[0-9a-f]{64}$'),
    format         VARCHAR(8)   NOT NULL CHECK (format IN ('wav', 'opus', 'mp4')),
    duration_ms    INT          NOT NULL CHECK (duration_ms >= 0),
    metadata_path  VARCHAR(512) NOT NULL,                -- the session's metadata .xml beside it
    CONSTRAINT recordings_session_fk FOREIGN KEY (session_id)
        REFERENCES recording_sessions (id) ON DELETE CASCADE,
    CONSTRAINT recordings_stream_fk FOREIGN KEY (stream_id)
        REFERENCES media_streams (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A session's recorded seconds and files, as a report would ask for them.
CREATE PROCEDURE IF NOT EXISTS session_summary(IN p_session_id BIGINT)
    READS SQL DATA
BEGIN
    SELECT s.id, s.call_id, COUNT(r.id) AS files, COALESCE(SUM(r.duration_ms), 0) / 1000 AS seconds
    FROM recording_sessions s LEFT JOIN recordings r ON r.session_id = s.id
    WHERE s.id = p_session_id
    GROUP BY s.id, s.call_id;
END;

-- File formats are stored in lower case whatever the recorder sent.
CREATE TRIGGER IF NOT EXISTS recordings_format_lower
    BEFORE INSERT ON recordings FOR EACH ROW
    SET NEW.format = LOWER(NEW.format);

-- Retention: failed sessions older than five years go (created disabled: the lab never runs it).
CREATE EVENT IF NOT EXISTS purge_failed_sessions
    ON SCHEDULE EVERY 1 DAY
    DISABLE
    DO DELETE FROM recording_sessions
       WHERE state = 'failed' AND started_at < NOW() - INTERVAL 5 YEAR;
