"""A page written to the CernVM Web API plugin's manual (its examples from "Creating sessions" to "Opting-in for
daemon management"), with only its first lines changed, in headless Chromium on another loopback origin,
against the real daemon and a real appliance guest (embedded QEMU driver, TCG). Each row of issue #12's table
is checked on what the page itself saw."""

import json

import pytest


def entries(browser):
    return browser.evaluate("window.entries")


def first(log, what):
    """The first value the page noted under `what`."""
    for name, value in log:
        if name == what:
            return value
    pytest.fail(f"the page never noted {what!r}: {json.dumps(log, indent=1)}")


def all_of(log, what):
    return [value for name, value in log if name == what]


def test_a_page_written_for_the_plugin_runs_a_session_as_the_manual_says(real_daemon, page_server, browser, artifact):
    real_daemon.ctl("origins", "approve", page_server)
    browser.navigate(f"{page_server}/plugin-manual.html?daemon={real_daemon.url}")
    browser.wait_for("window.entries.some(e => e[0] === 'done')", 300, "the page's session to end")
    log = entries(browser)
    shot = browser.screenshot(artifact("plugin-manual-page.png"))
    print(f"\nscreenshot of the plugin page: {shot}")
    assert first(log, "done") is True, json.dumps(log, indent=1)

    # o.hypervisorName / o.hypervisorVersion come from GET /api/v1.
    info = real_daemon.request("GET", "/api/v1")[1]
    assert first(log, "alert") == f"We are running with {info['hypervisor']['driver']}/{info['hypervisor']['version']}"
    assert info["hypervisor"]["driver"] == "QEMU" and info["hypervisor"]["version"].count(".") == 2

    # requestDaemonAccess(): the unprivileged members only.
    daemon = first(log, "daemon")
    status = real_daemon.request("GET", "/api/v1/daemon")[1]
    assert daemon["isRunning"] is True and daemon["idleTime"] == status["idleTime"]
    assert isinstance(daemon["isSystemIdle"], bool)
    assert daemon.get("path") is None and daemon["start"] == "undefined" and daemon["stop"] == "undefined"

    # Functions return 1 when scheduled; pause() on a closed session returns -8 and fires pauseError(msg, code).
    assert first(log, "requestSession returned") == 1
    assert first(log, "session state") == 0
    assert first(log, "pause() while closed") == -8
    message, code = first(log, "pauseError")
    assert code == -8 and "closed" in message

    # open({version: '1.3'}) is scheduled (1), then fails as openError(message, code): a one-parameter-style
    # listener gets the message, not an Event.
    assert first(log, "open() returned") == 1
    message, code = first(log, "openError")
    assert isinstance(message, str) and "1.3" in message and code < 0
    assert first(log, "open() again") == 1
    assert first(log, "start() returned") == 1

    # debug(message) events from the daemon: the image, the VM definition, the port forwarding.
    debug = all_of(log, "debug")
    assert any("Image 'appliance' resolved to" in line for line in debug), debug
    assert any(line.startswith("Defined VM vms-") for line in debug), debug
    assert any(f"answers at {real_daemon.url}/api/v1/sessions/" in line for line in debug), debug

    # progress(current, total, msg) with the manual's own handler.
    assert any(line.startswith("Performing: ") and " out of " in line for line in all_of(log, "console"))

    # After start: apiURL set, and rdpURL (the display) exists.
    state, has_api_url, rdp_url = first(log, "start")
    assert state == 4 and has_api_url is True
    assert rdp_url and rdp_url.startswith(real_daemon.url) and "#display=" in rdp_url

    # setExecutionCap(50); alert(sess.executionCap) says 50 at once.
    assert all_of(log, "alert")[1] == "50"
    # setProperty then getProperty, synchronously.
    assert first(log, "getProperty") == "10.110.17.67"
    session = next(s for s in json.loads(real_daemon.ctl("sessions", "list", "--json"))["sessions"] if s["name"] == "session name")
    assert real_daemon.request("GET", f"/api/v1/sessions/{session['id']}/properties/host",
                               token=real_daemon.admin_token)[1]["value"] == "10.110.17.67"

    # pause/resume/hibernate fire their events; apiURL and ip are gone after hibernate and close.
    assert first(log, "pause() returned") == 1
    assert first(log, "pause") == 6 and first(log, "resume") == 4
    assert first(log, "hibernate") == [7, None, None]
    # Opting in with plain fields: reads show what was written at once, then the daemon confirms.
    assert first(log, "daemon fields") == [True, 25, 100]
    assert first(log, "daemonControlChanged") == [True, 25, 100]
    assert session["daemonControlled"] is True and session["daemonMinCap"] == 25
    assert first(log, "close") == [0, None, None]
    assert not [e for e in log if e[0] == "error"], log


def test_a_privileged_page_may_change_and_stop_the_daemon(real_daemon, page_server, browser):
    # Another origin for the same pages: localhost instead of 127.0.0.1, approved as privileged.
    privileged = page_server.replace("127.0.0.1", "localhost")
    real_daemon.ctl("origins", "approve", "--privileged", privileged)
    try:
        browser.navigate(f"{privileged}/plugin-manual.html?daemon={real_daemon.url}")
        browser.wait_for("window.entries.some(e => e[0] === 'done')", 60, "the page's daemon part")
        log = entries(browser)
        daemon = first(log, "daemon")
        assert daemon["path"] and daemon["path"].startswith("/") and daemon["start"] == "function"
        assert first(log, "idleTime after writing it") == 77
        assert first(log, "stop()") == 1 and first(log, "start()") == 1
        assert first(log, "isRunning after stop()") is False
        assert first(log, "isRunning after start()") is True
        assert real_daemon.request("GET", "/api/v1/daemon")[1]["idleTime"] == 77
    finally:
        real_daemon.ctl("origins", "forget", privileged)
