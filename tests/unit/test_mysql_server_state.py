"""Server state helpers and dump options for both MariaDB and MySQL naming (MySQL cannot run
here, so its rows are shaped from its documented SHOW REPLICA STATUS output)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from siprec_backup.errors import ConfigurationError, SourceError
from siprec_backup.sources.mysql import (
    MySQLTarget,
    ServerVersion,
    _parse_position,
    dump_flags,
    normalise_binlog_status,
    normalise_replica_status,
)

MARIADB_ROW = {
    "Slave_IO_State": "Waiting for master to send event",
    "Master_Host": "127.0.0.1",
    "Master_User": "repl",
    "Master_Port": 3306,
    "Master_Log_File": "binlog.000002",
    "Read_Master_Log_Pos": 1234,
    "Relay_Master_Log_File": "binlog.000002",
    "Slave_IO_Running": "Yes",
    "Slave_SQL_Running": "Yes",
    "Exec_Master_Log_Pos": 1200,
    "Seconds_Behind_Master": 3,
    "Last_IO_Error": "",
    "Last_SQL_Error": "",
    "Master_Server_Id": 1,
    "Using_Gtid": "Slave_Pos",
    "Gtid_IO_Pos": "0-1-42",
    "Connection_name": "",
}

MYSQL_ROW = {
    "Replica_IO_State": "Waiting for source to send event",
    "Source_Host": "10.0.0.5",
    "Source_User": "repl",
    "Source_Port": "3306",
    "Source_Log_File": "mysql-bin.000007",
    "Read_Source_Log_Pos": "99",
    "Relay_Source_Log_File": "mysql-bin.000007",
    "Replica_IO_Running": "Connecting",
    "Replica_SQL_Running": "Yes",
    "Exec_Source_Log_Pos": "90",
    "Seconds_Behind_Source": None,
    "Last_IO_Error": "error connecting to source",
    "Last_SQL_Error": "",
    "Source_Server_Id": "0",
    "Retrieved_Gtid_Set": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
    "Executed_Gtid_Set": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
    "Channel_Name": "",
}


def test_mariadb_replica_status_is_normalised() -> None:
    out = normalise_replica_status(MARIADB_ROW)
    assert out["source_host"] == "127.0.0.1" and out["source_port"] == 3306
    assert out["io_running"] is True and out["sql_running"] is True
    assert out["seconds_behind"] == 3
    assert (out["source_log_file"], out["read_source_log_pos"]) == ("binlog.000002", 1234)
    assert out["exec_source_log_pos"] == 1200
    assert out["using_gtid"] == "Slave_Pos" and out["gtid_io_pos"] == "0-1-42"
    assert out["executed_gtid_set"] is None


def test_mysql_replica_status_is_normalised() -> None:
    out = normalise_replica_status(MYSQL_ROW)
    assert out["source_host"] == "10.0.0.5" and out["source_port"] == 3306
    assert out["io_running"] is False  # "Connecting" is not running
    assert out["sql_running"] is True
    assert out["seconds_behind"] is None
    assert out["read_source_log_pos"] == 99 and out["source_server_id"] == 0
    assert out["last_io_error"] == "error connecting to source"
    assert out["executed_gtid_set"].endswith(":1-5") and out["gtid_io_pos"] is None


def test_both_namings_give_the_same_keys() -> None:
    assert (
        normalise_replica_status(MARIADB_ROW).keys() == normalise_replica_status(MYSQL_ROW).keys()
    )


@pytest.mark.parametrize(
    ("version", "flavor", "replica_sql", "binlog_sql"),
    [
        ("10.11.19-MariaDB-0+deb12u1-log", "mariadb", "SHOW REPLICA STATUS", "SHOW MASTER STATUS"),
        ("10.4.32-MariaDB", "mariadb", "SHOW SLAVE STATUS", "SHOW MASTER STATUS"),
        ("5.7.44-log", "mysql", "SHOW SLAVE STATUS", "SHOW MASTER STATUS"),
        ("8.0.21", "mysql", "SHOW SLAVE STATUS", "SHOW MASTER STATUS"),
        ("8.0.36", "mysql", "SHOW REPLICA STATUS", "SHOW MASTER STATUS"),
        ("8.4.3", "mysql", "SHOW REPLICA STATUS", "SHOW BINARY LOG STATUS"),
    ],
)
def test_statements_follow_flavour_and_version(
    version: str, flavor: str, replica_sql: str, binlog_sql: str
) -> None:
    parsed = ServerVersion.parse(version)
    assert parsed.flavor == flavor
    assert parsed.replica_status_sql == replica_sql
    assert parsed.binlog_status_sql == binlog_sql


def test_unparsable_version() -> None:
    with pytest.raises(SourceError, match="cannot parse the server version"):
        ServerVersion.parse("banana")


def test_binlog_status_rows() -> None:
    maria = normalise_binlog_status({"File": "binlog.000003", "Position": 77}, "0-1-9")
    assert maria == {"file": "binlog.000003", "position": 77, "gtid": "0-1-9"}
    mysql = normalise_binlog_status(
        {"File": "b.1", "Position": "5", "Executed_Gtid_Set": "uuid:1-3"}, None
    )
    assert mysql == {"file": "b.1", "position": 5, "gtid": "uuid:1-3"}


def test_dump_flags_per_tool() -> None:
    maria = dump_flags("mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu")
    assert "--master-data=2" in maria and "--gtid" in maria
    mysql = dump_flags("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)")
    assert "--source-data=2" in mysql and "--gtid" not in mysql
    old = dump_flags("mysqldump  Ver 8.0.20 for Linux on x86_64")
    assert "--master-data=2" in old
    for flags in (maria, mysql):
        for flag in ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob"):
            assert flag in flags


def test_position_comments_are_parsed() -> None:
    maria = b"-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=1234;\n"
    assert _parse_position(maria + b"-- SET GLOBAL gtid_slave_pos='0-1-5';\n") == {
        "file": "binlog.000002",
        "position": 1234,
        "gtid": "0-1-5",
    }
    mysql = b"-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='b.000009', SOURCE_LOG_POS=4;\n"
    assert _parse_position(mysql) == {"file": "b.000009", "position": 4}


def test_target_validation_and_secrets() -> None:
    target = MySQLTarget(host="db", user="u", password="pw-secret", databases=("a", "b"))
    assert "pw-secret" not in repr(target) and "pw-secret" not in target.describe()
    assert target.describe() == "MySQL u@db:3306/a,b"
    assert target.restore_database is None
    assert MySQLTarget(host="db", databases=("a",)).restore_database == "a"
    assert MySQLTarget(host="db", databases=("a",), database="c").restore_database == "c"
    with pytest.raises(ConfigurationError, match="invalid MySQL port 0"):
        MySQLTarget(host="db", port=0)
    with pytest.raises(ConfigurationError, match=r"invalid database name 'a\.b'"):
        MySQLTarget(host="db", databases=("a.b",))
    with pytest.raises(ConfigurationError, match="listed twice"):
        MySQLTarget(host="db", databases=("a", "a"))


def test_options_file_holds_the_password_privately() -> None:
    target = MySQLTarget(host="db", user="u", password='p"w\\x')
    with target.options_file() as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert Path(path).read_text() == '[client]\npassword="p\\"w\\\\x"\n'
        args = target.client_args(path)
        assert args[0] == f"--defaults-extra-file={path}"
        assert not any('p"w' in a for a in args)
    assert not Path(path).exists()


def test_missing_tool_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="none of mariadb-dump, mysqldump found"):
        MySQLTarget(host="db", bin_dir=tmp_path).tool("mariadb-dump", "mysqldump")
