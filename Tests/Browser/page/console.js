// A page on another origin than the daemon's: it logs in to a real appliance guest with vmsession.js and shows
// its serial console with session.console() (?mode=read for a read-only viewer). What it saw goes to
// window.report; window.screen() is the terminal's text; Tests/Browser/test_console.py drives it.
'use strict';

const params = new URLSearchParams(location.search);
const daemonURL = params.get('daemon');
const readOnly = params.get('mode') === 'read';
const report = window.report = { phase: 'loading', notices: [], closed: null };

function show() {
  document.getElementById('phase').textContent = report.phase;
  document.getElementById('report').textContent = JSON.stringify(report, null, 2);
}

async function run() {
  await new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = daemonURL + '/vmsession.js';
    script.onload = resolve;
    script.onerror = () => reject(new Error('cannot load vmsession.js'));
    document.head.append(script);
  });
  const daemon = await VMSession.connect(daemonURL);
  const session = window.session = await daemon.requestSession(params.get('name'), params.get('secret'));
  report.stateName = session.stateName;
  report.phase = 'connecting'; show();
  const view = window.view = await session.console(document.getElementById('terminal'), { readOnly });
  view.addEventListener('notice', event => { report.notices.push(event.detail.message); show(); });
  view.addEventListener('closed', event => { report.closed = event.detail; show(); });
  report.readOnly = view.readOnly;
  report.phase = 'connected'; show();
}

window.screen = () => window.view ? window.view.text() : '';
/** Puts the keyboard focus in the terminal, where the test's key events (Chromium's own input) go. */
window.focusTerminal = () => { window.view.terminal.focus(); return document.activeElement === window.view.terminal.textarea; };

run().catch(error => {
  report.phase = 'failed';
  report.failure = error && (error.code ? { code: error.code, message: error.message } : String(error.stack || error));
  show();
});
