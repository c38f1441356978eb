"""Guest content kept off the daemon's origin, in headless Chromium: the real daemon (test driver), a stand-in
guest (standin_guest.py) on the session's forward, the daemon's own page with the admin token in its tab.
A guest page served through the proxy cannot register a service worker, read the daemon's page or API, or
read the tab's sessionStorage (the admin token); the daemon's page cannot be made to run a guest script as
a worker either, and keeps working; no request that reaches the guest carries a token in any header."""

import json
import os
import time
import uuid

import pytest

from standin_guest import StandInGuest


@pytest.fixture
def running_session(daemon):
    """A running session (test driver) whose guest is the stand-in, once the daemon's probe found it."""
    name = f"isolated-{uuid.uuid4().hex[:8]}"
    status, grant = daemon.request("POST", "/api/v1/sessions", {"name": name, "secret": "s"})
    assert status == 201, grant
    session, token = grant["session"]["id"], grant["token"]
    for action, body in (("open", {"memory": 128, "disk": 64}), ("start", {})):
        status, reply = daemon.request("POST", f"/api/v1/sessions/{session}/{action}", body, token=token)
        assert status == 202, reply
        status, done = daemon.request("GET", f"/api/v1/operations/{reply['operation']['id']}/wait?timeout=60", token=token)
        assert done["status"] == "succeeded", done
    # The test driver boots nothing: the stand-in listens where the daemon reaches a guest's port 80 (a Unix
    # socket in the session's network directory, or under /tmp/vmsessiond-UID when that path is too long).
    directory = f"{daemon.state_dir}/machines/{session}/network"
    if len(f"{directory}/net.sock".encode()) > 96:
        directory = f"/tmp/vmsessiond-{os.geteuid()}/{session}.net"
    os.makedirs(directory, exist_ok=True)
    record = os.path.join(daemon.directory, f"guest-{session}.jsonl")
    guest = StandInGuest(f"{directory}/api.sock", record_path=record)
    try:
        deadline = time.monotonic() + 60
        while daemon.request("GET", f"/api/v1/sessions/{session}/guest/", token=token)[0] != 200:
            assert time.monotonic() < deadline, "the daemon's probe never found the stand-in guest"
            time.sleep(0.1)
        yield session, token, guest
    finally:
        guest.close()
        daemon.request("POST", f"/api/v1/sessions/{session}/close", {}, token=token)


def test_a_guest_page_cannot_reach_the_daemons_origin_and_the_guest_never_sees_a_token(
        daemon, running_session, browser, artifact):
    session, token, guest = running_session
    guest_base = f"{daemon.url}/api/v1/sessions/{session}/guest"

    # The admin opens the daemon's page and enters the token (kept in this tab's sessionStorage).
    browser.navigate(daemon.url + "/")
    browser.wait_for("document.getElementById('daemon').textContent.startsWith('vmsessiond ')", 30, "the daemon's page")
    browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(daemon.admin_token)};"
        "document.getElementById('token-form').requestSubmit(); true")
    row = f"document.querySelector('#sessions tr[data-session-id={json.dumps(session)}]')"
    browser.wait_for(f"{row} && {row}.dataset.state === 'running'", 30, "the session listed on the daemon's page")

    # From the daemon's page itself, a guest script cannot become a worker: not as a service worker (the
    # page's CSP names the daemon's own scripts only, and the proxy refuses `Service-Worker: script`), not as
    # a dedicated worker.
    attempt = browser.evaluate(f"""
        (async () => {{
          const url = {json.dumps(guest_base + '/sw.js?token=' + token)};
          const out = {{}};
          try {{ await navigator.serviceWorker.register(url, {{scope: '/'}}); out.serviceWorker = 'registered'; }}
          catch (e) {{ out.serviceWorker = e.name; }}
          const violations = [];
          document.addEventListener('securitypolicyviolation', (e) => violations.push(e.effectiveDirective));
          try {{
            const worker = new Worker(url);
            out.worker = await new Promise((resolve) => {{
              worker.onerror = () => resolve('failed');
              setTimeout(() => resolve('started'), 5000);
            }});
          }} catch (e) {{ out.worker = e.name; }}
          out.violations = violations;
          out.registrations = (await navigator.serviceWorker.getRegistrations()).length;
          return JSON.stringify(out);
        }})()""")
    from_page = json.loads(attempt)
    assert from_page["serviceWorker"] != "registered", from_page
    assert from_page["worker"] != "started", from_page
    assert "worker-src" in from_page["violations"], from_page
    assert from_page["registrations"] == 0, from_page

    # The same tab is steered to a guest page (the only way to view one in a tab is ?token=).
    browser.navigate(f"{guest_base}/page.html?token={token}")
    report = browser.wait_for("window.report && window.report.phase === 'done' && window.report", 60, "the guest page's attempts")
    print(f"\nguest page's attempts: {json.dumps(report, indent=1)}")
    print(f"screenshot: {browser.screenshot(artifact('guest-isolation-page.png'))}")
    assert report["origin"] == "null", "the guest page runs in an opaque origin, not the daemon's"
    assert not report["sessionStorage"]["ok"], report["sessionStorage"]
    assert daemon.admin_token not in json.dumps(report)
    assert not report["cookie"]["ok"], report["cookie"]
    assert not report["serviceWorker"]["ok"], report["serviceWorker"]
    assert not report["daemonPage"]["ok"], f"the daemon's page is not readable: {report['daemonPage']}"
    assert not report["daemonAPI"]["ok"], f"the daemon's API refuses the guest page: {report['daemonAPI']}"

    # Back on the daemon's page: no worker was installed, the token is still there, and it works.
    browser.navigate(daemon.url + "/")
    browser.wait_for("document.getElementById('daemon').textContent.startsWith('vmsessiond ')", 30, "the daemon's page again")
    assert browser.evaluate("navigator.serviceWorker.getRegistrations().then(r => r.length)") == 0
    assert browser.evaluate("sessionStorage.getItem('vmsessiond.adminToken')") == daemon.admin_token
    browser.wait_for(f"{row} && {row}.dataset.state === 'running'", 30, "the daemon's page listing the session")
    browser.evaluate(f"Array.from({row}.querySelectorAll('button')).find(b => b.textContent === 'pause').click(); true")
    browser.wait_for(f"{row} && {row}.dataset.state === 'paused'", 30, "the daemon's page pausing the session")

    # What reached the guest: the page and what it asked for, never a token in any header, no Referer,
    # Cookie or Authorization; and the service worker's script was never fetched as one.
    requests = guest.requests()
    targets = [r["target"] for r in requests]
    assert any(t.startswith("/page.html") for t in targets), targets
    for request in requests:
        names = {name.lower() for name, _ in request["headers"]}
        assert not names & {"referer", "cookie", "authorization"}, request
        for name, value in request["headers"]:
            assert token not in value and daemon.admin_token not in value, request
        assert token not in request["target"], request
        assert ("service-worker", "script") not in {(n.lower(), v) for n, v in request["headers"]}, request


def test_the_daemons_page_and_errors_carry_the_isolation_headers(daemon):
    import urllib.request
    with urllib.request.urlopen(daemon.url + "/", timeout=30) as response:
        headers = response.headers
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = headers["Content-Security-Policy"]
    scripts = next(d for d in policy.split(";") if d.strip().startswith("script-src")).split()[1:]
    assert "'self'" not in scripts and scripts, policy
    assert all("/api/" not in source for source in scripts), policy
    try:
        urllib.request.urlopen(daemon.url + "/api/v1/nothing-here", timeout=30)
    except urllib.error.HTTPError as error:
        assert error.code == 404
        assert error.headers["X-Content-Type-Options"] == "nosniff"
        assert error.headers["Content-Type"].startswith("application/json")
