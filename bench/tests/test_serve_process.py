"""ServeProcess against the real aft-serve binary on the committed tiny bundle."""

import json
import urllib.request

import pytest
from aft import fixtures
from harness.serve_process import DEFAULT_BINARY, ServeError, ServeProcess, _flag_value

needs_binary = pytest.mark.skipif(
    not DEFAULT_BINARY.exists(),
    reason=f"{DEFAULT_BINARY} is not built (cargo build --release --locked)",
)
TINY_ARGS = ["--model-dir", str(fixtures.TINY_DIR)]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def embed(url, texts):
    body = json.dumps({"inputs": texts}).encode()
    req = urllib.request.Request(
        url + "/v1/embed", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@needs_binary
def test_starts_on_a_free_loopback_port_serves_and_stops_with_exit_code_0():
    with ServeProcess(args=TINY_ARGS) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert not srv.url.endswith(":0")
        assert get(srv.url + "/health/ready")[0] == 200
        out = embed(srv.url, ["hello world", "a second text"])
        assert len(out["embeddings"]) == 2
        assert srv.rss_bytes() > 1 << 20
        assert srv.cpu_seconds() > 0
        assert "listening on" in srv.log_text()
        assert srv.stop() == 0
    # The temporary log is gone from disk but its text is kept.
    assert not srv.log_path.exists()
    assert "SIGTERM" in srv.log_text()


@needs_binary
def test_finds_the_port_from_the_socket_when_the_log_filter_hides_the_line(tmp_path):
    log = tmp_path / "serve.log"
    with ServeProcess(args=[*TINY_ARGS, "--log-level", "warn"], log_path=log) as srv:
        assert "listening on" not in srv.log_text()
        assert get(srv.url + "/health/ready")[0] == 200
    assert log.exists(), "a log path the caller chose is left in place"


@needs_binary
def test_two_servers_at_once_get_different_ports():
    with ServeProcess(args=TINY_ARGS) as a, ServeProcess(args=TINY_ARGS) as b:
        assert a.url != b.url
        assert get(a.url + "/health/ready")[0] == get(b.url + "/health/ready")[0] == 200


@needs_binary
def test_early_exit_raises_with_the_log_tail_and_leaves_no_process(tmp_path):
    srv = ServeProcess(args=["--model-dir", str(tmp_path / "no-such-bundle")], ready_timeout=60)
    with pytest.raises(ServeError, match="exited with code") as err:
        srv.start()
    assert "no-such-bundle" in str(err.value), "the log tail names the bad directory"
    assert srv.returncode not in (None, 0)


@needs_binary
def test_not_ready_in_time_raises_and_stops_the_process():
    srv = ServeProcess(args=TINY_ARGS, ready_timeout=0)
    with pytest.raises(ServeError, match="not ready after"):
        srv.start()
    assert srv.returncode is not None, "the process was stopped"


def test_a_missing_binary_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ServeProcess(binary=tmp_path / "nope")


def test_address_flags_from_args_are_not_overridden():
    srv = ServeProcess(args=["--host=0.0.0.0", "--port", "9"], command=["/bin/true"])
    assert srv.argv.count("--host=0.0.0.0") == 1 and "--port" in srv.argv
    assert srv.argv[-2:] == ["--port", "9"]
    dflt = ServeProcess(args=["--workers", "2"], command=["/bin/true"])
    assert dflt.argv[-4:] == ["--host", "127.0.0.1", "--port", "0"]
    assert _flag_value(["--port", "1", "--port=2"], "--port") == "2"
