"""Unit tests of the load balancer levers: HAProxy stats parsing (transitional statuses included),
nginx include rendering, NGINX Plus error mapping, wait_drained, and secrets kept out of reprs."""

from __future__ import annotations

import time

import httpx
import pytest

from siprec_backup.errors import DrainTimeoutError, LoadBalancerError
from siprec_backup.traffic import (
    DOWN,
    DOWN_TRANSITIONAL,
    DRAIN,
    MAINT,
    NOLB,
    UNKNOWN,
    UP,
    UP_TRANSITIONAL,
    HAProxy,
    LoadBalancer,
    NginxPlus,
    ServerState,
    ServerStatus,
    UpstreamEntry,
    normalise_status,
    parse_stat_csv,
    parse_upstream,
    render_upstream,
)
from siprec_backup.traffic.haproxy import check_name
from siprec_backup.traffic.nginx_plus import PATCHES, PEER_STATES, api_error

#: The header of ``show stat`` as HAProxy 2.6.12 prints it (captured from the lab).
HEADER = (
    "# "
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wr"
    "edis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lb"
    "tot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hr"
    "sp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_ab"
    "rt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtim"
    "e,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall"
    ",check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate"
    "_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,s"
    "rc_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn"
    "_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ss"
    "l_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,"
    "h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protoc"
    "ol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2"
    "_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_c"
    "onnections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_"
    "out,"
)
FIELDS = HEADER[2:].split(",")


def row(**values: str) -> str:
    """One CSV row with ``values`` in their columns, the rest empty."""
    return ",".join(values.get(name, "") for name in FIELDS)


def server_row(backend: str, server: str, status: str, scur: str = "0") -> str:
    return row(
        pxname=backend,
        svname=server,
        status=status,
        scur=scur,
        weight="1",
        type="2",
        addr=f"10.0.0.{len(server)}:80",
    )


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("UP", UP),
        ("UP 1/3", UP_TRANSITIONAL),
        ("UP 2/3", UP_TRANSITIONAL),
        ("DOWN", DOWN),
        ("DOWN 1/2", DOWN_TRANSITIONAL),
        ("NOLB", NOLB),
        ("NOLB 1/3", NOLB),
        ("MAINT", MAINT),
        ("MAINT (via app/app-a)", MAINT),
        ("MAINT (resolution)", MAINT),
        ("DRAIN", DRAIN),
        ("DRAIN (agent)", DRAIN),
        ("DOWN (agent)", DOWN),
        ("no check", UP),
        ("what", UNKNOWN),
    ],
)
def test_haproxy_status_normalised(status: str, state: str) -> None:
    assert normalise_status(status) == state


def test_show_stat_keeps_only_server_rows() -> None:
    lines = [
        HEADER + "\n",
        row(pxname="fe", svname="FRONTEND", status="OPEN", type="0") + "\n",
        server_row("app", "app-a", "DRAIN", scur="3") + "\n",
        server_row("app", "app-b", "UP 1/3") + "\n",
        server_row("app", "app-c", "MAINT (via app/app-a)") + "\n",
        server_row("app", "app-d", "DOWN 1/2") + "\n",
        row(pxname="app", svname="BACKEND", status="UP", type="1") + "\n",
        "\n",
    ]
    servers = parse_stat_csv(lines)
    assert [(s.server, s.state, s.current_sessions) for s in servers] == [
        ("app-a", DRAIN, 3),
        ("app-b", UP_TRANSITIONAL, 0),
        ("app-c", MAINT, 0),
        ("app-d", DOWN_TRANSITIONAL, 0),
    ]
    assert servers[0] == ServerStatus("app", "app-a", "10.0.0.5:80", "DRAIN", DRAIN, 3, 1)
    assert servers[0].name == "app/app-a"


def test_not_stats_csv_is_refused() -> None:
    with pytest.raises(LoadBalancerError, match="not HAProxy stats CSV"):
        parse_stat_csv(["<html>login</html>\n"])


@pytest.mark.parametrize("name", ["", "a b", "be/srv", "x;y", "a\nshow info"])
def test_unsafe_runtime_names_refused(name: str) -> None:
    with pytest.raises(LoadBalancerError, match="invalid HAProxy server name"):
        check_name("server", name)


def test_haproxy_needs_an_access_and_hides_the_password() -> None:
    with pytest.raises(LoadBalancerError, match="runtime API address or a stats URL"):
        HAProxy()
    lb = HAProxy(stats_url="http://lb/stats", stats_user="u", stats_password="s3cret-pw")
    assert "s3cret-pw" not in repr(lb)
    assert "s3cret-pw" not in lb.describe()
    with pytest.raises(LoadBalancerError, match="needs the runtime API"):
        lb.set_state("app", "app-a", ServerState.DRAIN)


def test_unreachable_runtime_is_one_clear_error() -> None:
    with pytest.raises(LoadBalancerError, match=r"cannot reach HAProxy runtime /nonexistent/s"):
        HAProxy(runtime="/nonexistent/s.sock").servers()


# --- nginx include file ---------------------------------------------------------------------


def test_include_renders_and_reads_back() -> None:
    entries = [
        UpstreamEntry("10.0.0.1:8080"),
        UpstreamEntry("10.0.0.2:8080", weight=3, state=ServerState.DRAIN),
        UpstreamEntry("[2001:db8::1]:80", state=ServerState.MAINT),
    ]
    text = render_upstream(entries)
    assert text.splitlines()[1:] == [
        "server 10.0.0.1:8080 weight=1;",
        "server 10.0.0.2:8080 weight=3 down;  # siprec-backup: drain",
        "server [2001:db8::1]:80 weight=1 down;  # siprec-backup: maint",
    ]
    assert parse_upstream(text) == entries


def test_hand_written_include_is_read() -> None:
    text = "# ours\n  server app1:80;\nserver app2:80 max_fails=3 down;\n\n"
    assert parse_upstream(text) == [
        UpstreamEntry("app1:80"),
        UpstreamEntry("app2:80", state=ServerState.MAINT),
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "at least one server"),
        ([UpstreamEntry("10.0.0.1:80; include /etc/passwd")], "invalid nginx upstream server"),
        ([UpstreamEntry("10.0.0.1:80", weight=0)], "invalid weight 0"),
    ],
)
def test_bad_include_refused(entries: list[UpstreamEntry], message: str) -> None:
    with pytest.raises(LoadBalancerError, match=message):
        render_upstream(entries)


def test_include_with_other_directives_refused() -> None:
    with pytest.raises(LoadBalancerError, match="line 2 of the upstream include"):
        parse_upstream("server a:1;\nkeepalive 16;\n")


# --- NGINX Plus -----------------------------------------------------------------------------


def test_nginx_plus_error_is_one_line_with_code() -> None:
    body = {
        "error": {"status": 404, "text": "upstream not found", "code": "UpstreamNotFound"},
        "request_id": "f0e1",
        "href": "https://nginx.org/en/docs/http/ngx_http_api_module.html",
    }
    err = api_error("GET", "/http/upstreams/x/servers", httpx.Response(404, json=body))
    assert str(err) == (
        "NGINX Plus GET /http/upstreams/x/servers: 404 UpstreamNotFound: upstream not found"
    )
    html = httpx.Response(401, text="<html>401 Authorization Required</html>")
    assert str(api_error("GET", "/nginx", html)) == "NGINX Plus GET /nginx: 401 unauthorized"


def test_nginx_plus_states_and_patches() -> None:
    assert PEER_STATES["draining"] == DRAIN and PEER_STATES["down"] == MAINT
    assert PATCHES[ServerState.READY] == {"down": False, "drain": False}
    assert PATCHES[ServerState.DRAIN] == {"drain": True}
    assert PATCHES[ServerState.MAINT] == {"down": True}
    lb = NginxPlus("https://lb/api", username="admin", password="pl-s3cret")
    assert "pl-s3cret" not in repr(lb) and "pl-s3cret" not in lb.describe()


# --- wait_drained ---------------------------------------------------------------------------


class Countdown(LoadBalancer):
    """A load balancer whose one server loses a session per poll."""

    def __init__(self, sessions: int) -> None:
        self.sessions = sessions

    def describe(self) -> str:
        return "countdown"

    def check(self) -> str:
        return "countdown"

    def servers(self) -> list[ServerStatus]:
        now = self.sessions
        self.sessions = max(0, self.sessions - 1)
        return [ServerStatus("be", "s1", "a:1", "DRAIN", DRAIN, now, 1)]

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        raise NotImplementedError


def test_wait_drained_returns_when_sessions_reach_zero() -> None:
    waited = Countdown(3).wait_drained("be", "s1", deadline_s=5, poll_s=0.01)
    assert 0.02 <= waited < 1


def test_wait_drained_times_out_naming_server_and_sessions() -> None:
    t0 = time.monotonic()
    with pytest.raises(DrainTimeoutError, match=r"be/s1 still has \d+ current session"):
        Countdown(10_000).wait_drained("be", "s1", deadline_s=0.1, poll_s=0.01)
    assert time.monotonic() - t0 < 1


def test_unknown_backend_and_server_are_named() -> None:
    with pytest.raises(LoadBalancerError, match="no backend 'nope' \\(backends: be\\)"):
        Countdown(0).server("nope", "s1")
    with pytest.raises(LoadBalancerError, match="backend 'be' has no server 'x'"):
        Countdown(0).server("be", "x")
