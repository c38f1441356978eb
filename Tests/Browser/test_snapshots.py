"""vmsession.js's snapshots in a real Chromium against the real daemon (test driver): snapshot(name),
snapshots(), revert(name), deleteSnapshot(name), their events, and a refusal with the daemon's code."""

import uuid


def test_a_page_takes_lists_reverts_and_deletes_snapshots(daemon, browser):
    browser.navigate(f"{daemon.url}/")
    browser.wait_for("window.VMSession", 30, "vmsession.js on the daemon's page")
    name = f"snap-js-{uuid.uuid4().hex[:6]}"
    report = browser.evaluate("""(async () => {
      const d = await VMSession.connect(location.origin);
      const s = await d.requestSession('%s', 'a secret');
      const events = [];
      for (const type of ['snapshotCreated', 'snapshotReverted', 'snapshotDeleted']) {
        s.addEventListener(type, e => events.push([type, e.detail.name]));
      }
      await s.open({ memory: 128, disk: 64 });
      await s.start();
      const taken = await s.snapshot('js-1');
      await s.pause();
      const reverted = await s.revert('js-1');
      const state = s.stateName;
      const listed = (await s.snapshots()).map(x => [x.name, x.state]);
      let refused = null;
      try { await s.snapshot('not a name'); } catch (error) { refused = [error.code, error.legacyCode]; }
      let unknown = null;
      try { await s.revert('nope'); } catch (error) { unknown = error.code; }
      await s.deleteSnapshot('js-1');
      const after = await s.snapshots();
      for (let i = 0; i < 40 && events.length < 3; i++) await new Promise(r => setTimeout(r, 50));
      return { taken: [taken.action, taken.status], reverted: [reverted.action, reverted.status], state, listed, refused, unknown,
               after: after.length, events };
    })()""" % name)
    assert report["taken"] == ["snapshot", "succeeded"], report
    assert report["reverted"] == ["revert", "succeeded"], report
    assert report["state"] == "running", "reverted to a snapshot of the running VM, it runs again"
    assert report["listed"] == [["js-1", "running"]]
    assert report["refused"] == ["invalid_argument", -99]
    assert report["unknown"] == "not_found"
    assert report["after"] == 0
    assert report["events"] == [["snapshotCreated", "js-1"], ["snapshotReverted", "js-1"], ["snapshotDeleted", "js-1"]]
