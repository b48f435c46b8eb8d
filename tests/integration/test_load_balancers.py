"""The load balancer levers on real servers: the lab's HAProxy 2.6 (runtime API over TCP and a
unix socket, stats CSV with basic auth) and nginx 1.22 (include file, nginx -t, reload) in front
of the "app-a"/"app-b" backends; NGINX Plus against the fake in tests/fakes (commercial)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from siprec_backup.errors import DrainTimeoutError, LoadBalancerError
from siprec_backup.lab import LabState
from siprec_backup.lab.haproxy import HAProxyEndpoint
from siprec_backup.lab.nginx import NginxEndpoint
from siprec_backup.traffic import (
    DRAIN,
    MAINT,
    UP,
    UP_TRANSITIONAL,
    HAProxy,
    Nginx,
    NginxPlus,
    ServerState,
)
from tests.fakes.nginx_plus import FakeNginxPlus

lab = pytest.mark.lab
#: Figures measured by this module, printed at the end of the module (run with -s to see).
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    for name, seconds in FIGURES.items():
        print(f"\n{name}: {seconds * 1000:.1f} ms")


def hits(url: str, n: int) -> list[str]:
    """The bodies of ``n`` sequential GETs (each backend answers its own name)."""
    return [httpx.get(url, timeout=5).text.strip() for _ in range(n)]


# --- HAProxy --------------------------------------------------------------------------------


@pytest.fixture
def haproxy(lab: LabState) -> Iterator[HAProxyEndpoint]:
    """The lab's HAProxy; both servers set ready again afterwards."""
    endpoint = lab.haproxy()
    yield endpoint
    lb = endpoint.load_balancer()
    for name in ("app-a", "app-b"):
        lb.set_state("app", name, ServerState.READY)
    deadline = time.monotonic() + 5
    while {s.state for s in lb.servers()} - {UP, UP_TRANSITIONAL}:
        assert time.monotonic() < deadline, lb.servers()
        time.sleep(0.05)


@lab
@pytest.mark.parametrize("via", ["tcp", "unix", "stats"])
def test_haproxy_lists_servers(haproxy: HAProxyEndpoint, lab: LabState, via: str) -> None:
    servers = haproxy.load_balancer(via).servers()
    backends = lab.http_backends().addresses
    if via == "stats":  # the stats page does not show server addresses
        backends = {"app-a": "", "app-b": ""}
    assert [(s.backend, s.server, s.address, s.state) for s in servers] == [
        ("app", "app-a", backends["app-a"], UP),
        ("app", "app-b", backends["app-b"], UP),
    ]
    assert all(s.weight == 1 and s.current_sessions == 0 for s in servers)


@lab
@pytest.mark.parametrize("via", ["tcp", "unix", "stats"])
def test_haproxy_check(haproxy: HAProxyEndpoint, via: str) -> None:
    line = haproxy.load_balancer(via).check()
    assert "2 server(s) in 1 backend(s)" in line
    if via != "stats":
        assert line.startswith("HAProxy 2.6")


@lab
def test_haproxy_drain_under_live_traffic(haproxy: HAProxyEndpoint) -> None:
    lb = haproxy.load_balancer("unix")
    slow: list[tuple[str, float]] = []

    def hold() -> None:
        r = httpx.get(f"{haproxy.frontend_url}/slow?seconds=4", timeout=15)
        slow.append((r.text.strip(), time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(4)]  # round robin: 2 per server
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while sum(s.current_sessions for s in lb.servers()) < 4:
        assert time.monotonic() < deadline, f"the slow requests did not arrive: {lb.servers()}"
        time.sleep(0.02)

    lb.set_state("app", "app-a", ServerState.DRAIN)
    drained = lb.server("app", "app-a")
    assert (drained.status, drained.state) == ("DRAIN", DRAIN)
    assert drained.current_sessions >= 1  # the slow requests still run on app-a
    assert hits(haproxy.frontend_url, 10) == ["app-b"] * 10

    # Under load the requests above may outlast the slow ones: the order below is the proof.
    waited = lb.wait_drained("app", "app-a", deadline_s=15, poll_s=0.05)
    returned = time.monotonic()
    for t in threads:
        t.join(15)
    assert sorted(body for body, _ in slow) == ["app-a", "app-a", "app-b", "app-b"]
    last_a = max(done for body, done in slow if body == "app-a")
    assert returned >= last_a - 0.1  # scur reached 0 only once the slow requests ended
    assert waited < 10
    assert lb.server("app", "app-a").status == "DRAIN"


@lab
def test_haproxy_drain_timing_without_sessions(haproxy: HAProxyEndpoint) -> None:
    lb = haproxy.load_balancer("tcp")
    t0 = time.monotonic()
    lb.set_state("app", "app-b", ServerState.DRAIN)
    lb.wait_drained("app", "app-b", deadline_s=5, poll_s=0.01)
    assert lb.server("app", "app-b").state == DRAIN
    FIGURES["HAProxy drain, request to verified (no live sessions)"] = time.monotonic() - t0
    assert hits(haproxy.frontend_url, 4) == ["app-a"] * 4


@lab
def test_haproxy_maint_and_ready(haproxy: HAProxyEndpoint) -> None:
    lb = haproxy.load_balancer("tcp")
    lb.set_state("app", "app-a", ServerState.MAINT)
    status = lb.server("app", "app-a")
    assert (status.status, status.state) == ("MAINT", MAINT)
    assert hits(haproxy.frontend_url, 6) == ["app-b"] * 6

    lb.set_state("app", "app-a", ServerState.READY)
    assert lb.server("app", "app-a").state in (UP, UP_TRANSITIONAL)  # "UP 1/3" at first
    assert "app-a" in hits(haproxy.frontend_url, 6)


@lab
def test_haproxy_refusals_name_what_was_refused(haproxy: HAProxyEndpoint) -> None:
    lb = haproxy.load_balancer("tcp")
    with pytest.raises(LoadBalancerError, match=r"no backend 'nope' \(No such backend.\)"):
        lb.set_state("nope", "app-a", ServerState.DRAIN)
    with pytest.raises(LoadBalancerError, match=r"has no server 'app-z' \(No such server.\)"):
        lb.set_state("app", "app-z", ServerState.DRAIN)
    with pytest.raises(LoadBalancerError, match="no backend 'nope'"):
        lb.wait_drained("nope", "app-a", deadline_s=1)


@lab
def test_haproxy_wait_drained_times_out(haproxy: HAProxyEndpoint) -> None:
    lb = haproxy.load_balancer("tcp")
    holder = threading.Thread(
        target=lambda: httpx.get(f"{haproxy.frontend_url}/slow?seconds=2", timeout=10)
    )
    holder.start()
    deadline = time.monotonic() + 5
    busy = ""
    while not busy:
        busy = next((s.server for s in lb.servers() if s.current_sessions), "")
        assert time.monotonic() < deadline
        time.sleep(0.02)
    lb.set_state("app", busy, ServerState.DRAIN)
    with pytest.raises(DrainTimeoutError, match=rf"app/{busy} still has 1 current session"):
        lb.wait_drained("app", busy, deadline_s=0.3, poll_s=0.05)
    holder.join(10)


@lab
def test_haproxy_stats_wrong_password_refused(haproxy: HAProxyEndpoint, lab: LabState) -> None:
    bad = HAProxy(stats_url=haproxy.stats_url, stats_user="siprec", stats_password="wrong-pw")
    with pytest.raises(LoadBalancerError, match=r"user 'siprec' was refused \(HTTP 401\)") as exc:
        bad.servers()
    assert "wrong-pw" not in str(exc.value)
    assert haproxy.stats_password not in repr(haproxy)
    record = lab.services["haproxy"]
    assert haproxy.stats_password not in str(record.facts)
    assert haproxy.stats_password not in record.log.read_text()
    with pytest.raises(LoadBalancerError, match="refused"):
        bad.check()


@lab
def test_haproxy_unreachable_runtime(haproxy: HAProxyEndpoint, tmp_path: Path) -> None:
    with pytest.raises(
        LoadBalancerError, match=re.escape("cannot reach HAProxy runtime 127.0.0.1:1")
    ):
        HAProxy(runtime="127.0.0.1:1").check()
    with pytest.raises(LoadBalancerError, match="cannot reach HAProxy runtime"):
        HAProxy(runtime=str(tmp_path / "missing.sock")).servers()


# --- nginx ----------------------------------------------------------------------------------


@pytest.fixture
def nginx(lab: LabState) -> Iterator[NginxEndpoint]:
    """The lab's nginx; pointed back at app-a afterwards."""
    endpoint = lab.nginx()
    yield endpoint
    endpoint.load_balancer().repoint("app", [lab.http_backends().addresses["app-a"]])


@lab
def test_nginx_switch_moves_traffic(nginx: NginxEndpoint, lab: LabState) -> None:
    backends = lab.http_backends().addresses
    assert hits(nginx.url, 3) == ["app-a"] * 3
    lb = nginx.load_balancer(probe_expect="app-b")
    seconds = lb.repoint("app", [backends["app-b"]])
    FIGURES["nginx switch app-a -> app-b, request to verified"] = seconds
    assert hits(nginx.url, 5) == ["app-b"] * 5
    assert [(s.server, s.state) for s in lb.servers()] == [(backends["app-b"], UP)]
    assert seconds < 5


@lab
def test_nginx_drain_a_server(nginx: NginxEndpoint, lab: LabState) -> None:
    backends = lab.http_backends().addresses
    lb = nginx.load_balancer()
    lb.repoint("app", [backends["app-a"], backends["app-b"]])
    assert set(hits(nginx.url, 6)) == {"app-a", "app-b"}
    lb.set_state("app", backends["app-a"], ServerState.DRAIN)
    states = {s.server: (s.status, s.state) for s in lb.servers()}
    assert states == {backends["app-a"]: ("drain", DRAIN), backends["app-b"]: ("ready", UP)}
    assert hits(nginx.url, 6) == ["app-b"] * 6
    assert lb.wait_drained("app", backends["app-a"], deadline_s=10) < 10
    with pytest.raises(
        LoadBalancerError, match=re.escape("upstream 'app' has no server '10.9.9.9:1'")
    ):
        lb.set_state("app", "10.9.9.9:1", ServerState.DRAIN)
    with pytest.raises(LoadBalancerError, match="no managed upstream 'web'"):
        lb.set_state("web", backends["app-a"], ServerState.DRAIN)


@lab
def test_nginx_broken_include_is_rolled_back(nginx: NginxEndpoint) -> None:
    lb = nginx.load_balancer()
    before = Path(nginx.include).read_text()
    master = Path(nginx.pid_file).read_text()
    with pytest.raises(LoadBalancerError, match=r"nginx -t rejected .* nothing reloaded: .*port"):
        lb.repoint("app", ["127.0.0.1:99999"])
    assert Path(nginx.include).read_text() == before
    assert Path(nginx.pid_file).read_text() == master
    assert hits(nginx.url, 3) == ["app-a"] * 3
    lb.check()  # the configuration on disk is valid again


@lab
def test_nginx_check(nginx: NginxEndpoint) -> None:
    line = nginx.load_balancer().check()
    assert line.startswith("nginx/1.22") and "1 upstream(s) with 1 server(s)" in line
    wrong = Nginx(runner=nginx.load_balancer().runner, includes={}, pid_file="/nonexistent")
    with pytest.raises(LoadBalancerError, match="no master pid in /nonexistent"):
        wrong._master()


# --- NGINX Plus (fake) ----------------------------------------------------------------------

UPSTREAMS = {"app": ["10.0.0.1:80", "10.0.0.2:80"], "sip": ["10.0.1.1:5060"]}


@pytest.fixture
def plus() -> Iterator[FakeNginxPlus]:
    with FakeNginxPlus(UPSTREAMS) as fake:
        yield fake


def test_nginx_plus_lists_and_sets_states(plus: FakeNginxPlus) -> None:
    lb = NginxPlus(plus.url)
    assert lb.check().startswith("NGINX Plus 1.25.5 (nginx-plus-r32)")
    plus.set_active("app", "10.0.0.1:80", 4)
    assert [(s.backend, s.server, s.state, s.current_sessions) for s in lb.servers()] == [
        ("app", "10.0.0.1:80", UP, 4),
        ("app", "10.0.0.2:80", UP, 0),
        ("sip", "10.0.1.1:5060", UP, 0),
    ]
    lb.set_state("app", "10.0.0.1:80", ServerState.DRAIN)
    assert lb.server("app", "10.0.0.1:80").status == "draining"
    lb.set_state("app", "1", ServerState.MAINT)  # by id
    assert lb.server("app", "10.0.0.2:80").state == MAINT
    lb.set_state("app", "10.0.0.2:80", ServerState.READY)
    assert lb.server("app", "10.0.0.2:80").state == UP
    assert plus.patches == [
        ("app", {"drain": True}),
        ("app", {"down": True}),
        ("app", {"down": False, "drain": False}),
    ]


def test_nginx_plus_wait_drained(plus: FakeNginxPlus) -> None:
    lb = NginxPlus(plus.url)
    plus.set_active("app", "10.0.0.1:80", 2)
    lb.set_state("app", "10.0.0.1:80", ServerState.DRAIN)
    with pytest.raises(
        DrainTimeoutError, match=re.escape("app/10.0.0.1:80 still has 2 current session")
    ):
        lb.wait_drained("app", "10.0.0.1:80", deadline_s=0.2, poll_s=0.05)
    timer = threading.Timer(0.3, plus.set_active, ("app", "10.0.0.1:80", 0))
    timer.start()
    assert 0.25 < lb.wait_drained("app", "10.0.0.1:80", deadline_s=5, poll_s=0.05) < 2
    timer.join()


def test_nginx_plus_errors(plus: FakeNginxPlus) -> None:
    lb = NginxPlus(plus.url)
    with pytest.raises(
        LoadBalancerError,
        match="GET /http/upstreams/web/servers: 404 UpstreamNotFound: upstream not found",
    ):
        lb.set_state("web", "10.0.0.1:80", ServerState.DRAIN)
    with pytest.raises(
        LoadBalancerError, match=re.escape("upstream 'app' has no server '10.9.9.9:80'")
    ):
        lb.set_state("app", "10.9.9.9:80", ServerState.DRAIN)
    with pytest.raises(LoadBalancerError, match="404 UpstreamServerNotFound: server not found"):
        lb.request("PATCH", "/http/upstreams/app/servers/7", json={"drain": True})
    with pytest.raises(
        LoadBalancerError, match='400 UpstreamConfFormatError: unknown parameter "drian"'
    ):
        lb.request("PATCH", "/http/upstreams/app/servers/0", json={"drian": True})
    with pytest.raises(LoadBalancerError, match='400 UpstreamConfFormatError: invalid "down"'):
        lb.request("PATCH", "/http/upstreams/app/servers/0", json={"down": "yes"})
    with pytest.raises(LoadBalancerError, match="404 UnknownVersion"):
        NginxPlus(plus.url, version=99).servers()
    with pytest.raises(
        LoadBalancerError, match=re.escape("cannot reach NGINX Plus http://127.0.0.1:1")
    ):
        NginxPlus("http://127.0.0.1:1/api").check()


def test_nginx_plus_basic_auth() -> None:
    with FakeNginxPlus(UPSTREAMS, username="admin", password="pl-secret") as fake:
        good = NginxPlus(fake.url, username="admin", password="pl-secret")
        assert "2 upstream(s)" in good.check()
        with pytest.raises(LoadBalancerError, match="GET /nginx: 401 unauthorized") as exc:
            NginxPlus(fake.url, username="admin", password="wrong-pw").check()
        assert "wrong-pw" not in str(exc.value)
