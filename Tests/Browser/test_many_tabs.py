"""Ten tabs of the same page, each following two sessions, reloaded: every tab keeps getting its events and
making requests, although Chromium opens at most six HTTP/1.1 connections to the daemon for the site (the
tabs share one event stream: vmsession.js elects one tab that holds it for all)."""

import json
import time
import urllib.error
import urllib.request

from conftest import Daemon


def set_everywhere(daemon, tabs, value):
    """Writes property `p` of every session the tabs follow, with the admin token (each write is an event)."""
    for tab in tabs:
        for session_id in tab.evaluate("window.ids"):
            status, reply = daemon.request("PUT", f"/api/v1/sessions/{session_id}/properties/p", {"value": value},
                                           token=daemon.admin_token)
            assert status == 200, reply


def wait_all_saw(tabs, value):
    for index, tab in enumerate(tabs):
        tab.wait_for(f"window.ids && window.ids.every(id => (window.seen[id] || []).includes({json.dumps(value)}))", 60,
                     f"tab {index} to see {value!r} on both of its sessions")


def test_ten_tabs_reloaded_all_keep_working(daemon, page_server, browser):
    daemon.ctl("origins", "approve", page_server)
    url = f"{page_server}/tabs.html?daemon={daemon.url}&tab="
    browser.navigate(url + "0")
    tabs = [browser] + [browser.open_tab(url + str(index)) for index in range(1, 10)]
    for index, tab in enumerate(tabs):
        tab.wait_for("window.ready || window.failure", 60, f"tab {index} to follow its sessions")
        assert tab.evaluate("window.failure") is None, tab.evaluate("window.failure")
    set_everywhere(daemon, tabs, "before")
    wait_all_saw(tabs, "before")

    for round in range(2):
        for tab in tabs:
            tab.call("Page.reload")
        for index, tab in enumerate(tabs):
            tab.wait_for("window.ready || window.failure", 60, f"tab {index} to follow its sessions after reload {round}")
            assert tab.evaluate("window.failure") is None, tab.evaluate("window.failure")
        set_everywhere(daemon, tabs, f"after reload {round}")
        wait_all_saw(tabs, f"after reload {round}")
        # And requests still go through from every tab.
        for index, tab in enumerate(tabs):
            assert tab.evaluate("window.sessions[0].getProperty('p')") == f"after reload {round}", f"tab {index}"


def stream_slot_free(daemon):
    """Whether the daemon would take one more event stream now (its budget is one stream in this test)."""
    request = urllib.request.Request(daemon.url + "/api/v1/events", headers={"Authorization": f"Bearer {daemon.admin_token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        assert error.code == 429, error.read()
        return False


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_page_kept_in_the_back_forward_cache_lets_its_stream_go_and_catches_up_when_shown(page_server, browser):
    daemon = Daemon({"VMSESSIOND_MAX_EVENT_STREAMS": "1"})
    try:
        cached_page_test(daemon, page_server, browser)
    finally:
        daemon.stop()


def cached_page_test(daemon, page_server, browser):
    daemon.ctl("origins", "approve", page_server)
    browser.navigate(f"{page_server}/tabs.html?daemon={daemon.url}&tab=cached&one=1")
    browser.wait_for("window.ready || window.failure", 60, "the page to follow its sessions")
    assert not stream_slot_free(daemon), "the page holds the daemon's one event stream"
    browser.evaluate("window.addEventListener('pageshow', e => { window.shownAgain = e.persisted; }), true")
    ids = browser.evaluate("window.ids")
    for session_id in ids:
        daemon.request("PUT", f"/api/v1/sessions/{session_id}/properties/p", {"value": "before"}, token=daemon.admin_token)
    browser.wait_for("window.ids.every(id => window.seen[id].includes('before'))", 30, "the first events")
    # Away to another page of the site, and back: Chromium restores the page from its back/forward cache.
    browser.navigate(f"{page_server}/ordering.html")
    browser.wait_for("location.pathname === '/ordering.html'", 30, "the other page")
    # The cached page let its stream go. The daemon frees the slot once a write fails: the second heartbeat
    # (every 15 s) after the close at the latest.
    wait_until(lambda: stream_slot_free(daemon), 75, "the cached page to let its event stream go")
    for session_id in ids:
        status, _ = daemon.request("PUT", f"/api/v1/sessions/{session_id}/properties/p", {"value": "while away"},
                                   token=daemon.admin_token)
        assert status == 200
    browser.evaluate("setTimeout(() => history.back(), 0), true")
    browser.wait_for("window.ids && window.ready", 30, "the page again")
    reasons = browser.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].notRestoredReasons)")
    assert browser.evaluate("window.shownAgain") is True, f"not restored from the back/forward cache: {reasons}"
    # What happened while it was hidden is replayed on the reopened stream, and it follows on from there.
    browser.wait_for("window.ids.every(id => window.seen[id].includes('while away'))", 30, "the events sent while away")
    for session_id in ids:
        daemon.request("PUT", f"/api/v1/sessions/{session_id}/properties/p", {"value": "back"}, token=daemon.admin_token)
    browser.wait_for("window.ids.every(id => window.seen[id].includes('back'))", 30, "the events after coming back")
