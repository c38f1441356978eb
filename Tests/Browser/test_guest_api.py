"""The guest's own HTTP API through the daemon, from a page in headless Chromium, with a real appliance guest
under TCG: it answers through the proxy (session.guest.fetch), and not to a wrong token or to a page whose
origin the user never approved."""

import json
import uuid

import pytest

from conftest import serving_pages


@pytest.fixture(scope="module")
def stranger_server():
    """The same page files from yet another loopback origin, one the user never approves."""
    with serving_pages() as origin:
        yield origin


def test_the_guest_api_answers_a_page_through_the_daemon_and_not_a_wrong_token_or_an_unapproved_origin(
        real_daemon, page_server, stranger_server, browser, artifact):
    daemon = real_daemon
    daemon.ctl("origins", "approve", page_server)
    word = uuid.uuid4().hex[:10]
    browser.navigate(f"{page_server}/guest.html?daemon={daemon.url}&name=guest-{word}&word={word}")
    report = browser.wait_for("['done', 'failed'].includes(window.report.phase) && window.report", 300,
                              "the page to start its guest and reach its API")
    print(f"\nscreenshot: {browser.screenshot(artifact('guest-api-page.png'))}")
    assert report["phase"] == "done", report.get("failure")
    session = report["session"]

    # apiURL (the plugin's) is the daemon's proxy route, not where the daemon reaches the guest.
    assert report["apiURL"] == f"{daemon.url}/api/v1/sessions/{session}/guest" == report["guestURL"]
    assert report["available"]["apiURL"] == report["apiURL"]

    # The guest's answer, through the daemon, readable by the approved page.
    assert report["viaLibrary"]["status"] == 200, report["viaLibrary"]
    assert report["viaLibrary"]["body"].strip() == f"guest says {word}"
    # (that the page could read it at all proves the daemon's CORS answer: the guest sends none)
    assert report["viaLibraryRelative"]["body"].strip() == f"guest says {word}"
    assert report["missing"]["status"] == 404, "the guest's own 404 passes through"

    # A wrong token or none: the daemon's JSON refusal, and nothing from the guest.
    for refused in (report["wrongToken"], report["noToken"]):
        assert refused["status"] == 401, refused
        assert json.loads(refused["body"])["error"]["code"] == "unauthorized"
        assert word not in refused["body"]

    # Bad input: an oversized body is refused before the guest; a burst is served or told to wait.
    assert report["oversized"].get("status") == 413 or report["oversized"].get("rejected"), report["oversized"]
    if "status" in report["oversized"]:
        assert json.loads(report["oversized"]["body"])["error"]["code"] == "payload_too_large"
    assert set(report["manyStatuses"]) <= {200, 429}, report["manyStatuses"]
    assert 200 in report["manyStatuses"]
    assert report["afterMany"]["status"] == 200

    # A page from an origin the user never approved, even with the valid token: the browser gets no answer
    # it may read, and the daemon refuses it (recording the origin as pending).
    browser.navigate(
        f"{stranger_server}/guest.html?mode=stranger&daemon={daemon.url}&session={session}&token={report['token']}")
    stranger = browser.wait_for("window.report.phase === 'done' && window.report", 60, "the stranger's attempts")
    assert stranger["withToken"] == {"rejected": "TypeError"}, stranger
    assert stranger["withQueryToken"] == {"rejected": "TypeError"}, stranger
    origins = json.loads(daemon.ctl("origins", "list", "--json"))["origins"]
    assert next(o for o in origins if o["origin"] == stranger_server)["status"] == "pending"
    status, refusal = daemon.request(
        "GET", f"/api/v1/sessions/{session}/guest/", token=report["token"], headers={"Origin": stranger_server})
    assert status == 403 and refusal["error"]["code"] == "origin_not_approved"

    status, closed = daemon.request("POST", f"/api/v1/sessions/{session}/close", {}, token=report["token"])
    assert status == 202, closed
