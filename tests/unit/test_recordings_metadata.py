"""RFC 7865 metadata parsing: real documents parse, malformed and dangerous ones are refused."""

from __future__ import annotations

import pytest

from siprec_backup.errors import SourceError
from siprec_backup.recordings import MetadataError, MetadataParser, parse_metadata
from siprec_backup.recordings.metadata import MAX_METADATA_BYTES

# In the shape of RFC 7865, section 9 (complete metadata snapshot), with extension data.
RFC7865_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <group group_id="7+OTCyoxTmqmqyA/1weDAg==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
    <call-center xmlns='urn:ietf:params:xml:ns:callcenter'>
      <supervisor>sip:alice@atlanta.com</supervisor>
    </call-center>
  </group>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;
       remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
    <group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:bob@biloxi.com">
      <name xml:lang="it">Bob</name>
    </nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:alice@atlanta.com">
      <name xml:lang="it">Alice</name>
    </nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>96</label>
  </stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>97</label>
  </stream>
  <sessionrecordingassoc session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
  </sessionrecordingassoc>
  <participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w=="
      session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
  </participantsessionassoc>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
</recording>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>&lol3;</datamode></recording>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>&x;</datamode></recording>
"""


def test_rfc7865_example_gives_every_id() -> None:
    meta = parse_metadata(RFC7865_EXAMPLE)
    assert meta.datamode == "complete"
    assert meta.group_ids == ("7+OTCyoxTmqmqyA/1weDAg==",)
    assert meta.session_ids == ("hVpd7YQgRW2nD22h7q60JQ==",)
    assert meta.sip_session_ids[0].startswith("ab30317f1a784dc48ff824d0d3715d86;")
    assert meta.participant_ids == ("srfBElmCRp2QB23b7Mpk0w==", "zSfPoSvdSDCmU3A3TRDxAw==")
    assert meta.aors == ("sip:bob@biloxi.com", "sip:alice@atlanta.com")
    assert meta.stream_ids == ("UAAMm5GRQKSCMVvLyl4rFw==", "i1Pz3to5hGk8fuXl+PbwCw==")


def test_feeding_in_small_pieces_gives_the_same_result() -> None:
    parser = MetadataParser("x.xml")
    for i in range(0, len(RFC7865_EXAMPLE), 7):
        parser.feed(RFC7865_EXAMPLE[i : i + 7])
    assert parser.close() == parse_metadata(RFC7865_EXAMPLE)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><session", "not well-formed"),
        (b"", "not well-formed"),
        (b"<recording><datamode>complete</datamode></recording>", "root element"),
        (BILLION_LAUGHS, "refused unsafe XML"),
        (EXTERNAL_ENTITY, "refused unsafe XML"),
    ],
)
def test_bad_documents_are_refused_with_one_clear_line(document: bytes, expected: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(document, "recordings/x.xml")
    message = str(caught.value)
    assert expected in message and "recordings/x.xml" in message and "\n" not in message
    assert isinstance(caught.value, SourceError)


def test_a_huge_document_is_refused_without_parsing_it_all() -> None:
    parser = MetadataParser("big.xml")
    parser.feed(b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>")
    chunk = b"x" * (1 << 16)
    for _ in range(MAX_METADATA_BYTES // len(chunk) + 2):
        parser.feed(chunk)
    with pytest.raises(MetadataError, match="larger than"):
        parser.close()
