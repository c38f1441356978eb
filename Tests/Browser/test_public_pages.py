"""Pages on public sites under Local Network Access (Chromium 156): the page's origin is made public
(`--ip-address-space-overrides`) and served over HTTPS with a self-signed certificate; the page loads
vmsession.js from its own origin, pinned by the integrity hash the README documents, and reaches the real
daemon (libvirt's test driver) only as the browser allows."""

import base64
import hashlib
import os
import re
import urllib.parse
import uuid

import pytest

from cdp import Chromium
from conftest import CLIENT, ROOT


def integrity():
    with open(CLIENT, "rb") as f:
        return "sha384-" + base64.b64encode(hashlib.sha384(f.read()).digest()).decode()


def outcomes(browser, count, what):
    return browser.wait_for(f"window.outcomes && window.outcomes.length >= {count} && window.outcomes", 60, what)


@pytest.fixture
def public_browser(public_site):
    chromium = Chromium(arguments=public_site[2])
    try:
        yield chromium
    finally:
        chromium.close()


def page_url(origin, daemon, name="public"):
    return f"{origin}/public.html?daemon={daemon.url}&name={name}-{uuid.uuid4().hex[:6]}&integrity={urllib.parse.quote(integrity(), safe='')}"


def test_the_readme_gives_the_clients_version_and_integrity_hash():
    with open(CLIENT, encoding="utf-8") as f:
        source = f.read()
    version = re.match(r"/\*! vmsession\.js (\d+\.\d+\.\d+) ", source).group(1)
    assert f"version: '{version}'" in source, "the header and VMSession.version agree"
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert f'integrity="{integrity()}"' in readme, "the README's integrity hash is the file's"
    assert f"vmsession.js {version}" in readme


def test_a_public_https_page_allowed_the_local_network_opens_and_starts_a_session(daemon, public_site, public_browser):
    origin = public_site[0]
    daemon.ctl("origins", "approve", origin)
    public_browser.call("Browser.setPermission", permission={"name": "loopback-network"}, setting="granted", origin=origin)
    public_browser.navigate(page_url(origin, daemon))
    first, finished = outcomes(public_browser, 2, "the page to connect and start its session")[:2]
    assert public_browser.evaluate("window.isSecureContext") is True
    assert first == {"when": "load", "outcome": "connected", "version": "1.3.0"}, first
    assert finished.get("session") == "running", finished
    assert finished["states"][-1] == "running" and "starting" in finished["states"], "events came on the page's stream"


def test_a_public_page_refused_the_local_network_says_so_with_a_client_from_its_own_origin(daemon, public_site, public_browser):
    origin = public_site[0]
    daemon.ctl("origins", "approve", origin)
    public_browser.navigate(page_url(origin, daemon))
    # On load, without a gesture: the browser would ask, so the client sends nothing and says so.
    first = outcomes(public_browser, 1, "the first outcome")[0]
    assert first["outcome"] == "local_network_prompt" and first["isVMSessionError"] and first["name"] == "VMSessionError", first
    # From a click the request is made; headless Chromium refuses the permission.
    public_browser.click("#connect")
    second = outcomes(public_browser, 2, "the outcome of the click")[1]
    assert second["when"] == "click" and second["outcome"] == "local_network_denied" and second["isVMSessionError"], second
    assert "Local Network Access" in second["message"]
    assert public_browser.evaluate("VMSession.localNetworkPermission()") == "denied"
    # Every other way to the daemon says the same, as a VMSession.Error (never a bare TypeError).
    failures = public_browser.evaluate(f"""(async () => {{
      const session = new VMSession.Session(new VMSession.Daemon({daemon.url!r}), {{ id: 'x' }}, 'token');
      const codes = [];
      for (const call of [() => session.screenshot(), () => session.guest.fetch('/'), () => session.refresh()]) {{
        try {{ await call(); codes.push('resolved'); }} catch (e) {{ codes.push((e instanceof VMSession.Error) + ' ' + e.code); }}
      }}
      return codes;
    }})()""")
    assert failures == ["true local_network_denied"] * 3, failures


def test_a_plain_http_public_page_is_told_it_cannot_work(daemon, public_site, public_browser):
    origin = public_site[1]
    daemon.ctl("origins", "approve", origin)
    public_browser.navigate(page_url(origin, daemon))
    public_browser.click("#connect")
    entries = outcomes(public_browser, 2, "both outcomes")
    assert public_browser.evaluate("window.isSecureContext") is False
    assert [e["outcome"] for e in entries] == ["insecure_context", "insecure_context"], entries
    assert all(e["isVMSessionError"] and "HTTPS" in e["message"] for e in entries)
