"""vmsession.js and the daemon's page in a real headless Chromium, against the real vmsessiond binary
(libvirt's test driver: the VMs are pretend, the HTTP, CORS, SSE and the library are real)."""

import json
import uuid


def test_a_third_party_page_is_refused_then_approved_then_runs_a_session(daemon, page_server, browser, artifact):
    name = f"browser-{uuid.uuid4().hex[:8]}"
    browser.navigate(f"{page_server}/index.html?daemon={daemon.url}&name={name}")

    # First attempt: the origin is unknown, so the daemon refuses it and records it as pending.
    report = browser.wait_for("window.report && window.report.phase !== 'loading' && window.report", 30, "the page's first attempt")
    first = report["firstAttempt"]
    assert first is not None, report
    assert first["code"] == "origin_not_approved", first
    assert first["legacyCode"] == -13
    assert f"vmsessionctl origins approve {page_server}" in first["message"]
    origins = json.loads(daemon.ctl("origins", "list", "--json"))["origins"]
    assert {"origin": page_server, "status": "pending"}.items() <= next(o for o in origins if o["origin"] == page_server).items()
    assert browser.evaluate("window.report.phase") == "refused", "nothing goes through before the user approves"

    daemon.ctl("origins", "approve", page_server)

    report = browser.wait_for(
        "['done', 'failed'].includes(window.report.phase) && window.report", 120, "the page to run its session")
    shot = browser.screenshot(artifact("third-party-page.png"))
    print(f"\nscreenshot of the third-party page: {shot}")
    assert report["phase"] == "done", report.get("failure")

    # The plugin's callback style.
    assert report["requestSessionReturned"] == 1
    assert report["callback"]["name"] == name and report["callback"]["stateName"] == "closed" and report["callback"]["state"] == 0
    assert report["wrongSecret"] == -20, "failure_callback gets the plugin's code for a denied password"

    # The long actions resolved when done, with the session's properties current.
    assert report["afterOpen"] == {"operation": "succeeded", "state": 2, "stateName": "open", "cpus": 1, "ram": 128, "memory": 128, "disk": 64}
    assert report["afterStart"] == {"operation": "succeeded", "state": 4, "stateName": "running"}
    assert report["finalState"] == {"state": 4, "stateName": "running"}

    # Events, in order, and the plugin's names and positional arguments.
    assert report["states"] == ["opening", "open", "starting", "running"]
    assert report["pluginEvents"] == ["open", "start"]
    assert report["progress"], "progress events arrived"
    assert report["legacyProgress"] == [[p["done"], p["total"], p["message"]] for p in report["progress"]]
    for kind in ("operationStarted", "operationCompleted", "propertyChanged"):
        assert kind in report["events"], kind
    assert report["events"].count("operationCompleted") >= 2

    # Failures reject with the daemon's code and the plugin's number.
    assert report["resumeWhileRunning"]["code"] == "invalid_state"
    assert report["resumeWhileRunning"]["legacyCode"] == -8
    if report["supportsExecutionCap"]:
        assert report["cap"] == {"value": 50}
    else:
        assert report["cap"]["code"] == "not_supported" and report["cap"]["legacyCode"] == -11
    assert report["property"] == "hello"
    assert report["missingProperty"] is None

    # What the page saw is what the daemon has.
    sessions = json.loads(daemon.ctl("sessions", "list", "--json"))["sessions"]
    assert next(s for s in sessions if s["name"] == name)["state"] == "running"

    # The daemon restarts. The test driver forgets its VMs, so the daemon says so at start-up, before the
    # page's stream is back: the page gets that event by replay, with nothing lost or repeated.
    seen = len(report["eventIds"])
    daemon.restart()
    browser.wait_for("window.report.states.includes('error')", 60, "the event sent while the page was away")
    after = browser.evaluate("window.report")
    assert after["states"][-1] == "error"
    assert after["eventIds"] == sorted(set(after["eventIds"])), "event ids increase, none twice"
    assert len(after["eventIds"]) > seen
    assert browser.evaluate("[window.session.stateName, window.session.state]") == ["error", 5], "properties follow the stream"


def test_the_daemons_page_lists_sessions_live_and_decides_origins(daemon, browser, artifact):
    name = f"listed-{uuid.uuid4().hex[:8]}"
    status, grant = daemon.request("POST", "/api/v1/sessions", {"name": name, "secret": "s"})
    assert status == 201, grant
    session_id, token = grant["session"]["id"], grant["token"]
    status, opened = daemon.request("POST", f"/api/v1/sessions/{session_id}/open", {"memory": 128, "disk": 64}, token=token)
    assert status == 202, opened
    status, operation = daemon.request("GET", f"/api/v1/operations/{opened['operation']['id']}/wait?timeout=60", token=token)
    assert operation["status"] == "succeeded", operation
    # A page from an origin the user has not decided about yet.
    stranger = "http://localhost:1"
    status, refused = daemon.request("GET", "/api/v1", headers={"Origin": stranger})
    assert status == 403 and refused["error"]["code"] == "origin_not_approved"

    browser.navigate(daemon.url + "/")
    browser.wait_for("document.getElementById('daemon').textContent.startsWith('vmsessiond ')", 30, "the page to reach the daemon")
    assert browser.evaluate("document.querySelectorAll('#sessions tr[data-session-id]').length") == 0, "nothing without the token"
    browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(daemon.admin_token)};"
        "document.getElementById('token-form').requestSubmit(); true")

    row = f"document.querySelector('#sessions tr[data-name={json.dumps(name)}]')"
    browser.wait_for(f"{row} && {row}.dataset.state === 'open'", 30, "the session listed as open")
    assert browser.evaluate("sessionStorage.getItem('vmsessiond.adminToken')") == daemon.admin_token

    # Live: a start made elsewhere shows up through the daemon-wide event stream, without a reload.
    status, _ = daemon.request("POST", f"/api/v1/sessions/{session_id}/start", {}, token=token)
    assert status == 202
    browser.wait_for(f"{row} && {row}.dataset.state === 'running'", 30, "the row to follow the session to running")

    # The page's own controls act on the session: pause it.
    browser.evaluate(f"Array.from({row}.querySelectorAll('button')).find(b => b.textContent === 'pause').click(); true")
    browser.wait_for(f"{row} && {row}.dataset.state === 'paused'", 30, "the pause button to pause the session")
    status, shown = daemon.request("GET", f"/api/v1/sessions/{session_id}", token=token)
    assert shown["state"] == "paused"

    # The pending origin is listed, and Approve approves it.
    origin_row = f"document.querySelector('#origins tr[data-origin={json.dumps(stranger)}]')"
    browser.wait_for(f"{origin_row} && {origin_row}.dataset.status === 'pending'", 30, "the pending origin listed")
    browser.evaluate(f"{origin_row}.querySelector('button.approve').click(); true")
    browser.wait_for(f"{origin_row} && {origin_row}.dataset.status === 'approved'", 30, "the origin approved")
    status, _ = daemon.request("GET", "/api/v1", headers={"Origin": stranger})
    assert status == 200, "the approval reached the daemon"

    shot = browser.screenshot(artifact("daemon-page.png"))
    print(f"\nscreenshot of the daemon's page: {shot}")
