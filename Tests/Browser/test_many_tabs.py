"""Ten tabs of the same page, each following two sessions, reloaded: every tab keeps getting its events and
making requests, although Chromium opens at most six HTTP/1.1 connections to the daemon for the site (the
tabs share one event stream: vmsession.js elects one tab that holds it for all)."""

import json


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
