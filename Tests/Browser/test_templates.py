"""The daemon's page and templates, in a real Chromium against the real daemon with the appliance under TCG:
the admin warms a template up from an image on the page and sees its progress, sees it listed, a session
opened from it shows as its user, deleting it is refused on the page while that session runs and works once
it is closed; a template made on the page from a running session is listed and deleted the same way. The
page does all of it under its own Content-Security-Policy, with no inline script and no violation."""

import json
import time
import uuid

import pytest


READY = "#!/bin/sh\necho VMSESSION-TEMPLATE-READY\n"


def finish(daemon, reply, token):
    """Waits for the operation a 202 `reply` started; returns it ended."""
    operation = reply["operation"]
    deadline = time.monotonic() + 300
    while operation["status"] == "running":
        assert time.monotonic() < deadline, (operation, daemon.log())
        status, operation = daemon.request("GET", f"/api/v1/operations/{operation['id']}/wait?timeout=20", token=token)
        assert status == 200, operation
    return operation


def row(kind, name):
    return f"document.querySelector('#templates tr[data-kind={json.dumps(kind)}][data-template={json.dumps(name)}]')"


def set_field(browser, element_id, value):
    browser.evaluate(f"document.getElementById({json.dumps(element_id)}).value = {json.dumps(value)}; true")


def listed(daemon):
    status, reply = daemon.request("GET", "/api/v1/templates", token=daemon.admin_token)
    assert status == 200, reply
    return {template["name"]: template for template in reply["templates"]}


@pytest.fixture
def templates_cleaned(real_daemon):
    """Deletes, at the end, any template a failed test left behind (after `session` closed their users)."""
    yield
    for name in listed(real_daemon):
        real_daemon.request("DELETE", f"/api/v1/templates/{name}", token=real_daemon.admin_token)


@pytest.fixture
def session(real_daemon, templates_cleaned):
    """Makes sessions on request, (name, id, token) each; closes and deletes them all at the end."""
    made = []

    def make(version, user_data):
        name = f"{version}-{uuid.uuid4().hex[:6]}"
        status, grant = real_daemon.request("POST", "/api/v1/sessions", {"name": name, "secret": "template secret"})
        assert status == 201, grant
        session_id, token = grant["session"]["id"], grant["token"]
        made.append((session_id, token))
        for action, body in (("open", {"cpus": 1, "memory": 256, "disk": 64, "version": version}), ("start", {"userData": user_data})):
            status, reply = real_daemon.request("POST", f"/api/v1/sessions/{session_id}/{action}", body, token=token)
            assert status == 202, reply
            assert finish(real_daemon, reply, token)["status"] == "succeeded", real_daemon.log()
        return name, session_id, token

    yield make
    for session_id, token in made:
        status, reply = real_daemon.request("POST", f"/api/v1/sessions/{session_id}/close", {}, token=token)
        if status == 202:
            finish(real_daemon, reply, token)
        real_daemon.request("DELETE", f"/api/v1/sessions/{session_id}", token=token)


def test_the_daemons_page_makes_lists_and_deletes_templates_refusing_one_in_use(
        real_daemon, session, browser, artifact):
    warm, copied = f"warm-{uuid.uuid4().hex[:6]}", f"copied-{uuid.uuid4().hex[:6]}"
    # Every Content-Security-Policy violation from the first script on, and what the warm-up's row showed.
    browser.call("Page.addScriptToEvaluateOnNewDocument", source="""
      window.cspViolations = [];
      document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(e.effectiveDirective + ' ' + e.blockedURI));
      window.warmUpSeen = [];
      new MutationObserver(() => {
        const tbody = document.getElementById('templates');
        if (!tbody) return;
        for (const tr of tbody.querySelectorAll('tr[data-kind="warm-up"]')) {
          const p = tr.querySelector('progress');
          window.warmUpSeen.push([tr.dataset.template, tr.dataset.status, p ? p.value : null, tr.querySelector('td.warm-up').textContent]);
        }
      }).observe(document, { subtree: true, childList: true });""")
    browser.navigate(real_daemon.url + "/")
    browser.wait_for("document.getElementById('daemon').textContent.startsWith('vmsessiond ')", 30, "the page to reach the daemon")
    set_field(browser, "token", real_daemon.admin_token)
    browser.evaluate("document.getElementById('token-form').requestSubmit(); true")
    browser.wait_for("document.querySelector('#templates td.empty') && "
                     "document.querySelector('#templates td.empty').textContent === 'No templates yet.'", 30, "the empty template list")

    # From an image: the page's form starts a warm-up; its progress shows while it runs, then the template.
    set_field(browser, "tfi-name", warm)
    set_field(browser, "tfi-image", "appliance")
    set_field(browser, "tfi-user-data", READY)
    set_field(browser, "tfi-memory", "256")
    set_field(browser, "tfi-disk", "64")
    browser.evaluate("document.getElementById('template-from-image').requestSubmit(); true")
    browser.wait_for(f"document.getElementById('message').textContent.startsWith('template {warm} made')", 300,
                     f"the page to say the warm-up made the template: {real_daemon.log()[-3000:]}")
    seen = browser.evaluate("window.warmUpSeen")
    running = [entry for entry in seen if entry[0] == warm and entry[1] == "running"]
    assert running, f"the warm-up's progress was shown while it ran: {seen}"
    assert any(entry[2] is not None and entry[3].strip() for entry in running), running
    browser.wait_for(f"{row('template', warm)} && !{row('warm-up', warm)}", 30, "the template listed, the warm-up's own row gone")
    template = listed(real_daemon)[warm]
    assert template["baseVersion"] == "appliance" and template["bytes"] > 0
    cells = browser.evaluate(f"Array.from({row('template', warm)}.cells).map(c => c.textContent)")
    assert cells[0] == warm and "warm-up of image appliance" in cells[1], cells
    assert browser.evaluate(f"{row('template', warm)}.dataset.bytes") == str(template["bytes"])
    assert cells[3] == "0" and cells[4].startswith("done in "), cells

    # A session opened from it is listed as its user, live.
    user, user_id, _ = session(warm, "#!/bin/sh\necho warm session\n")
    browser.wait_for(f"{row('template', warm)} && {row('template', warm)}.dataset.sessions === '1'", 30, "the session listed as its user")
    assert user in browser.evaluate(f"{row('template', warm)}.querySelector('td.users').textContent")
    assert listed(real_daemon)[warm]["sessions"] == [user_id]

    # From a running session (booted cold from the image, with user-data), with the page's other form.
    source, source_id, _ = session("appliance", "#!/bin/sh\necho prepared\n")
    option = f"document.querySelector('#tfs-session option[value={json.dumps(source_id)}]')"
    browser.wait_for(f"!!{option}", 30, "the running session offered as a source")
    browser.evaluate(f"document.getElementById('tfs-session').value = {json.dumps(source_id)}; true")
    set_field(browser, "tfs-name", copied)
    browser.evaluate("document.getElementById('template-from-session').requestSubmit(); true")
    browser.wait_for(f"document.getElementById('message').textContent.startsWith('template {copied} made')", 120,
                     "the page to say the template was made from the session")
    browser.wait_for(f"!!{row('template', copied)}", 30, "the template made from the session listed")
    cells = browser.evaluate(f"Array.from({row('template', copied)}.cells).map(c => c.textContent)")
    assert f"session {source} on image appliance" in cells[1] and cells[3] == "0" and cells[4] == "—", cells
    assert listed(real_daemon)[copied]["fromSession"] == source_id
    status, shown = real_daemon.request("GET", f"/api/v1/sessions/{source_id}", token=real_daemon.admin_token)
    assert shown["state"] == "running", "the session a template was made of runs on"

    # Deleting the template in use is refused on the page, with the daemon's reason; nothing is deleted.
    browser.evaluate("window.confirm = () => true; true")
    browser.evaluate(f"{row('template', warm)}.querySelector('button.delete').click(); true")
    refusal = browser.wait_for(f"{row('template', warm)} && {row('template', warm)}.querySelector('.refusal') && "
                               f"{row('template', warm)}.querySelector('.refusal').textContent", 30, "the refusal shown in the row")
    assert "in use" in refusal and user in refusal, refusal
    assert browser.evaluate("document.getElementById('message').className") == "error"
    assert "(invalid_state)" in browser.evaluate("document.getElementById('message').textContent")
    assert warm in listed(real_daemon), "the refused delete deleted nothing"

    # Once the session is closed, the same button deletes it; then the other one.
    status, reply = real_daemon.request("POST", f"/api/v1/sessions/{user_id}/close", {}, token=real_daemon.admin_token)
    assert status == 202 and finish(real_daemon, reply, real_daemon.admin_token)["status"] == "succeeded"
    browser.wait_for(f"{row('template', warm)} && {row('template', warm)}.dataset.sessions === '0'", 30, "the closed session no longer its user")
    shot = browser.screenshot(artifact("daemon-page-templates.png"))
    print(f"\nscreenshot of the daemon's page with templates: {shot}")
    for name in (warm, copied):
        browser.evaluate(f"{row('template', name)}.querySelector('button.delete').click(); true")
        browser.wait_for(f"!{row('template', name)}", 60, f"template {name} gone from the page")
    assert listed(real_daemon) == {}
    status, _ = real_daemon.request("GET", f"/api/v1/templates/{warm}", token=real_daemon.admin_token)
    assert status == 404

    # All of it ran from the daemon's own script files: no inline script or handler, and nothing was blocked.
    assert browser.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    assert browser.evaluate(
        "Array.from(document.querySelectorAll('*')).flatMap(e => e.getAttributeNames().filter(a => a.startsWith('on'))).length") == 0
    assert browser.evaluate("window.cspViolations") == []
