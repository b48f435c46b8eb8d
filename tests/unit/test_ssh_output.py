"""Line splitting and the bounded tail of remote command output (no server)."""

from __future__ import annotations

from siprec_backup.remote.output import LineSplitter


def collect() -> tuple[list[tuple[str, str]], LineSplitter]:
    seen: list[tuple[str, str]] = []
    splitter = LineSplitter("stdout", lambda stream, line: seen.append((stream, line)))
    return seen, splitter


def test_lines_are_emitted_as_soon_as_complete() -> None:
    seen, splitter = collect()
    splitter.feed(b"one\ntw")
    assert seen == [("stdout", "one")]
    splitter.feed(b"o\r\nthree")
    assert seen == [("stdout", "one"), ("stdout", "two")]
    splitter.close()
    assert [line for _, line in seen] == ["one", "two", "three"]
    assert splitter.tail == "one\ntwo\nthree"


def test_utf8_split_across_chunks_and_bad_bytes() -> None:
    seen, splitter = collect()
    data = "café\n".encode()
    splitter.feed(data[:4])
    splitter.feed(data[4:])
    splitter.feed(b"\xff\xfebad\n")
    splitter.close()
    assert [line for _, line in seen] == ["café", "\ufffd\ufffdbad"]


def test_tail_keeps_only_the_last_lines() -> None:
    splitter = LineSplitter("stderr", tail_lines=3)
    for i in range(1000):
        splitter.feed(f"line {i}\n".encode())
    splitter.close()
    assert splitter.tail == "line 997\nline 998\nline 999"
    assert splitter.lines_seen == 1000


def test_over_long_lines_are_split_and_the_partial_stays_bounded() -> None:
    seen: list[str] = []
    splitter = LineSplitter("stdout", lambda _s, line: seen.append(line), max_line=10)
    for _ in range(10):
        splitter.feed(b"x" * 7)  # 70 characters, no newline yet
    assert all(len(line) == 10 for line in seen)
    assert len(seen) == 7
    splitter.feed(b"yy\n" + b"z" * 25 + b"\n")
    splitter.close()
    assert seen[7:] == ["yy", "z" * 10, "z" * 10, "z" * 5]
    assert max(len(line) for line in seen) == 10


def test_empty_lines_are_kept() -> None:
    seen, splitter = collect()
    splitter.feed(b"\n\na\n")
    splitter.close()
    assert [line for _, line in seen] == ["", "", "a"]
