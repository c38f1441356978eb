"""The HTTP contract, `Schema/openapi.yaml`, checked against itself and against the live daemon.

Starts the real `vmsessiond` on libvirt's test driver and a free loopback port, then:
- validates the document (OpenAPI 3.1) and that the daemon serves exactly it;
- checks that every error code in `VMSessionError.Code` is documented with its legacy number;
- runs schemathesis with every check on every route but the event streams (no 5xx, documented statuses,
  content types, headers and response bodies as documented, schema-invalid input refused with 4xx and
  schema-valid input accepted, undocumented methods answered 405, …);
- follows the event streams by hand and validates every event against the document's `Event`.

Run it with `make test-contract` (it builds the daemon first) or `pytest Tests/Contract`.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "Schema" / "openapi.yaml"
BINARY = os.environ.get("VMSESSIOND_BINARY", str(ROOT / ".build" / "debug" / "vmsessiond"))
# Schemathesis's budget: examples per operation and a fixed seed, so that CI runs are repeatable;
# raise SCHEMATHESIS_MAX_EXAMPLES or change SCHEMATHESIS_SEED to explore further by hand.
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50")
SEED = os.environ.get("SCHEMATHESIS_SEED", "20250131")


@pytest.fixture(scope="module")
def spec():
    with open(SPEC_PATH, encoding="utf-8") as file:
        return yaml.safe_load(file)


class Daemon:
    """The real vmsessiond on the test driver, in a state directory of its own."""

    def __init__(self, directory: Path):
        self.state = directory / "state"
        appliance = directory / "appliance"
        appliance.mkdir(parents=True)
        for name in ("vmlinuz", "initrd.img"):
            (appliance / name).write_bytes(b"")
        self.log_path = directory / "daemon.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [BINARY, "--libvirt-uri", "test:///default", "--listen", "127.0.0.1:0", "--state-dir", str(self.state),
             "--appliance-dir", str(appliance), "--stop-grace", "1",
             # The fuzzer creates thousands of sessions and opens them with any resources: quotas as high
             # as they go, so that it reaches the rest (the quotas have tests of their own).
             *[arg for limit in ("sessions", "sessionsPerOrigin", "cpus", "memory", "disk", "cpusPerOrigin",
                                 "memoryPerOrigin", "diskPerOrigin", "snapshotsPerSession", "snapshotsPerOrigin",
                                 "snapshotMiBPerSession", "snapshotMiBPerOrigin")
               for arg in ("--limit", f"{limit}=1099511627776")]],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log_path.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vmsessiond did not start:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        self.admin_token = (self.state / "admin-token").read_text().strip()

    def api(self, path: str) -> str:
        return self.url + path

    def admin(self) -> dict:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def daemon():
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"no vmsessiond binary at {BINARY}; run `make test-contract` (or `swift build`) first")
    with tempfile.TemporaryDirectory(prefix="vms-contract-") as directory:
        daemon = Daemon(Path(directory))
        try:
            yield daemon
        finally:
            status = daemon.stop()
            log = daemon.log_path.read_text(errors="replace")
        assert status == 0, f"vmsessiond did not exit cleanly on SIGTERM (status {status}):\n{log[-4000:]}"


def test_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_error_code_is_documented_with_its_legacy_number(spec):
    source = (ROOT / "Sources" / "VMSessionCore" / "VMSessionError.swift").read_text()
    codes = dict((name, int(legacy)) for name, legacy in re.findall(r'Code\("(\w+)", legacyCode: (-?\d+)\)', source))
    assert len(codes) > 20, "the codes were read from VMSessionError.swift"
    schemas = spec["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == set(codes)
    assert set(schemas["LegacyCode"]["enum"]) == set(codes.values())
    described = dict(re.findall(r"(\w+) (-\d+)", schemas["LegacyCode"]["description"]))
    assert {name: int(legacy) for name, legacy in described.items()} == codes


def test_daemon_serves_the_document(daemon):
    reply = requests.get(daemon.api("/api/v1/openapi.yaml"), timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/yaml"
    assert reply.content == SPEC_PATH.read_bytes()


@pytest.mark.parametrize("headers, code", [
    ({"Host": "evil.example"}, "forbidden_host"),
    ({"Origin": "http://localhost:8123"}, "origin_not_approved"),
])
def test_document_is_behind_the_guards(daemon, spec, headers, code):
    reply = requests.get(daemon.api("/api/v1/openapi.yaml"), headers=headers, timeout=10)
    assert reply.status_code == 403
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json()["error"]["code"] == code
    jsonschema.validate(reply.json(), schema(spec, "Error"))


def schema(spec, name):
    """A component schema, resolvable on its own ($refs point into the document's components)."""
    return {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}


def test_schemathesis(daemon, tmp_path):
    """Every route but the event streams, fuzzed and checked against the document the daemon serves."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
        "run", daemon.api("/api/v1/openapi.yaml"),
        "--url", daemon.url,
        "--header", f"Authorization: Bearer {daemon.admin_token}",
        # Every check schemathesis has, positive_data_acceptance and unsupported_method included: the
        # document must be as strict as the daemon, and the daemon as the document.
        "--checks", "all",
        "--exclude-path-regex", "/events$",
        # Adding a host makes the daemon connect to it: a fuzzed qemu+ssh:// URI could name any machine on the
        # network. Its refusals are route tests (VMSessionAPITests.HostRoutesTests); the other host routes are fuzzed.
        "--exclude-operation-id", "addHost",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", MAX_EXAMPLES,
        "--seed", SEED,
        # One worker: hypothesis parses lambdas with ast.parse, which CPython 3.11 can fail on from two threads.
        "--workers", "1",
        "--request-timeout", "30",
        "--suppress-health-check", "too_slow",
        "--no-color",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    print(result.stdout[-20000:])
    print(result.stderr[-5000:], file=sys.stderr)
    print(f"schemathesis took {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, "schemathesis found problems; its report is above"


def sse_lines(response):
    """The lines of an event stream as they arrive (one iterator per stream: it buffers)."""
    return response.iter_lines(chunk_size=None, decode_unicode=True)


def sse_events(lines, count, until=None):
    """Reads SSE frames: (id, event, data) for `count` events or until `until` matches one."""
    frames, fields = [], {}
    for line in lines:
        if line == "":
            if "data" in fields:
                frames.append((fields.get("id"), fields.get("event"), json.loads(fields["data"])))
                if len(frames) >= count or (until and until(frames[-1])):
                    return frames
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value
    return frames


def test_session_event_stream_replays_and_follows_as_documented(daemon, spec):
    grant = requests.post(daemon.api("/api/v1/sessions"), json={"name": "contract sse", "secret": "s"}, timeout=30).json()
    session, token = grant["session"]["id"], grant["token"]
    auth = {"Authorization": f"Bearer {token}"}
    event = jsonschema.Draft202012Validator(schema(spec, "Event"), format_checker=jsonschema.FormatChecker())
    url = daemon.api(f"/api/v1/sessions/{session}/events")
    with requests.get(url, params={"token": token, "since": 0}, stream=True, timeout=(10, 30)) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = sse_lines(stream)
        assert sse_events(lines, 1)[0][1] == "sessionCreated"
        assert requests.put(daemon.api(f"/api/v1/sessions/{session}/properties/colour"), json={"value": "blue"},
                            headers=auth, timeout=10).status_code == 200
        assert requests.post(daemon.api(f"/api/v1/sessions/{session}/open"), json={"memory": 64}, headers=auth,
                             timeout=10).status_code == 202
        frames = sse_events(lines, 50, until=lambda frame: frame[1] in ("operationCompleted", "operationFailed"))
    kinds = [kind for _, kind, _ in frames]
    assert kinds[0] == "propertyChanged" and kinds[-1] == "operationCompleted", kinds
    assert "stateChanged" in kinds and "operationStarted" in kinds
    for frame_id, kind, data in frames:
        event.validate(data)
        assert data["type"] == kind and str(data["eventId"]) == frame_id and data["sessionId"] == session
    ids = [data["eventId"] for _, _, data in frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # The daemon-wide stream, with Last-Event-ID: the admin sees this session's events after the one given.
    with requests.get(daemon.api("/api/v1/events"), headers={**daemon.admin(), "Last-Event-ID": str(ids[0])},
                      stream=True, timeout=(10, 30)) as stream:
        assert stream.status_code == 200
        replayed = sse_events(sse_lines(stream), len(ids) - 1, until=lambda frame: frame[2]["eventId"] == ids[-1])
    mine = [data["eventId"] for _, _, data in replayed if data["sessionId"] == session]
    assert mine == ids[1:]
    for _, _, data in replayed:
        event.validate(data)


def test_one_stream_carries_the_sessions_of_several_tokens_and_resumes(daemon, spec):
    grants = [requests.post(daemon.api("/api/v1/sessions"), json={"name": f"contract mux {i}", "secret": "s"}, timeout=30).json()
              for i in range(3)]
    followed, other = grants[:2], grants[2]
    event = jsonschema.Draft202012Validator(schema(spec, "Event"), format_checker=jsonschema.FormatChecker())
    params = [("token", g["token"]) for g in followed]

    def write(grant, value):
        reply = requests.put(daemon.api(f"/api/v1/sessions/{grant['session']['id']}/properties/p"), json={"value": value},
                             headers={"Authorization": f"Bearer {grant['token']}"}, timeout=10)
        assert reply.status_code == 200

    with requests.get(daemon.api("/api/v1/events"), params=params, stream=True, timeout=(10, 30)) as stream:
        assert stream.status_code == 200
        lines = sse_lines(stream)
        for round in range(3):
            for grant in (other, *followed):
                write(grant, f"v{round}")
        frames = sse_events(lines, 6)
    sessions = [data["sessionId"] for _, _, data in frames]
    assert sessions == [g["session"]["id"] for _ in range(3) for g in followed], "each followed session's events, no other's"
    ids = [data["eventId"] for _, _, data in frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for _, _, data in frames:
        event.validate(data)
    # Resumed after the second event: the other four, in order.
    with requests.get(daemon.api("/api/v1/events"), params=params, headers={"Last-Event-ID": str(ids[1])},
                      stream=True, timeout=(10, 30)) as stream:
        assert [data["eventId"] for _, _, data in sse_events(sse_lines(stream), 4)] == ids[2:]
    # One bad token refuses the whole stream; more than 256 tokens is a bad request.
    bad = requests.get(daemon.api("/api/v1/events"), params=params + [("token", "not-a-token")], timeout=10)
    assert bad.status_code == 401
    jsonschema.validate(bad.json(), schema(spec, "Error"))
    many = requests.get(daemon.api("/api/v1/events"), params=[("token", followed[0]["token"])] + [("token", f"t{i}") for i in range(256)],
                        timeout=10)
    assert many.status_code == 400 and many.json()["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize("path, params, headers, status", [
    ("/api/v1/events", {"since": "-1"}, "admin", 400),
    ("/api/v1/events", {"since": "x"}, "admin", 400),
    ("/api/v1/events", {}, None, 401),
    ("/api/v1/events", {"token": "not-a-token"}, None, 401),
    ("/api/v1/sessions/00000000-0000-0000-0000-000000000000/events", {}, "admin", 404),
    ("/api/v1/sessions/not-a-uuid/events", {}, "admin", 404),
])
def test_event_stream_errors_are_documented_json(daemon, spec, path, params, headers, status):
    reply = requests.get(daemon.api(path), params=params, headers=daemon.admin() if headers else {}, timeout=10)
    assert reply.status_code == status
    documented = spec["paths"]["/api/v1/events" if path == "/api/v1/events" else "/api/v1/sessions/{id}/events"]
    assert str(status) in documented["get"]["responses"]
    jsonschema.validate(reply.json(), schema(spec, "Error"))
