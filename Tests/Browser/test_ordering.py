"""Replies that arrive late never overwrite what a newer reply or event set: vmsession.js in Chromium against
the real daemon, with the page's fetch holding back one answer (the daemon has acted, the page learns late)."""

import uuid


def test_a_late_reply_to_an_idle_time_write_does_not_undo_a_later_stop(daemon, page_server, browser):
    privileged = page_server.replace("127.0.0.1", "localhost")
    daemon.ctl("origins", "approve", "--privileged", privileged)
    try:
        browser.navigate(f"{privileged}/ordering.html")
        browser.wait_for("window.VMSession", 30, "the client")
        result = browser.evaluate(f"""(async () => {{
          const daemon = await VMSession.connect({daemon.url!r});
          const access = daemon.requestDaemonAccess();
          delayNext('PUT', '/api/v1/daemon', 1500);   // the idle-time write's answer comes late
          access.idleTime = 66;
          access.stop();
          await sleep(3500);
          const afterStop = {{ isRunning: access.isRunning, idleTime: access.idleTime }};
          access.start();
          await sleep(1500);
          access.close();
          return {{ afterStop, afterStart: access.isRunning }};
        }})()""")
        assert result == {"afterStop": {"isRunning": False, "idleTime": 66}, "afterStart": True}, result
        status = daemon.request("GET", "/api/v1/daemon")[1]
        assert status["isRunning"] is True and status["idleTime"] == 66
    finally:
        daemon.ctl("origins", "forget", privileged)


def test_a_late_reply_to_a_refresh_does_not_undo_a_pause(daemon, page_server, browser):
    daemon.ctl("origins", "approve", page_server)
    browser.navigate(f"{page_server}/ordering.html")
    browser.wait_for("window.VMSession", 30, "the client")
    name = f"late-{uuid.uuid4().hex[:6]}"
    result = browser.evaluate(f"""(async () => {{
      const daemon = await VMSession.connect({daemon.url!r});
      const s = await daemon.requestSession({name!r}, 'secret');
      await s.open({{ memory: 128, disk: 64 }});
      await s.start();
      delayNext('GET', '/api/v1/sessions/' + s.id, 1500);   // this refresh is answered 'running', late
      const late = s.refresh();
      await s.pause();
      await late;
      await sleep(300);
      return [s.stateName, s.state];
    }})()""")
    assert result == ["paused", 6], result
