// A page on another origin than the daemon's, written as a third party would: it loads vmsession.js from
// the daemon, is refused until the user approves its origin, then runs a session and records what it saw
// in window.report (read by the test over the DevTools protocol, and shown on the page for the screenshot).
'use strict';

const params = new URLSearchParams(location.search);
const daemonURL = params.get('daemon');
const sessionName = params.get('name');
const report = window.report = {
  phase: 'loading', firstAttempt: null, events: [], pluginEvents: [], progress: [], legacyProgress: [], states: [],
};

function show() {
  document.getElementById('phase').textContent = report.phase;
  document.getElementById('report').textContent = JSON.stringify(report, null, 2);
}

function sleep(ms) { return new Promise(resolve => setTimeout(resolve, ms)); }

async function until(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await sleep(100);
  }
}

function describe(error) { return { code: error.code, legacyCode: error.legacyCode, message: error.message }; }

async function run() {
  // The origin is not approved yet: the first attempt must be refused.
  try {
    await VMSession.connect(daemonURL);
    report.firstAttempt = { connected: true };
  } catch (error) {
    report.firstAttempt = describe(error);
  }
  report.phase = 'refused';
  show();

  // The user approves the origin (the test does, with vmsessionctl); keep asking, for a bounded time.
  let daemon = null;
  const deadline = Date.now() + 60000;
  while (!daemon) {
    try { daemon = await VMSession.connect(daemonURL); } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(300);
    }
  }
  report.phase = 'connected';
  report.supportsExecutionCap = daemon.info.hypervisor.supportsExecutionCap;
  show();

  // The plugin's callback style: returns 1 (scheduled), then success_callback(session), a plugin-style session.
  const pluginSession = await new Promise((resolve, reject) => {
    report.requestSessionReturned = daemon.requestSession(sessionName, 'page-secret', resolve,
      code => reject(new Error('failure_callback(' + code + ')')));
  });
  pluginSession.disconnect();
  report.callback = { id: pluginSession.id, name: pluginSession.name, state: pluginSession.state, stateName: pluginSession.stateName };
  // The same session again, Promise style (no callbacks): the owner's secret opens it again.
  const session = await daemon.requestSession(sessionName, 'page-secret');
  window.session = session;
  report.wrongSecret = await new Promise(resolve =>
    daemon.requestSession(sessionName, 'not-the-secret', () => resolve('success_callback'), code => resolve(code)));

  report.eventIds = [];
  for (const type of VMSession.EVENT_TYPES) {
    session.addEventListener(type, event => { report.events.push(type); report.eventIds.push(event.eventId); });
  }
  session.addEventListener('progress', event => report.progress.push(event.detail));
  // A plugin-style listener: positional arguments (tasksCompleted, tasksTotal, statusMessage).
  session.addEventListener('progress', function (done, total, message) { report.legacyProgress.push([done, total, message]); });
  session.addEventListener('stateChanged', event => report.states.push(event.detail.state));
  for (const action of ['open', 'start']) {
    session.addEventListener(action, () => report.pluginEvents.push(action));
    session.addEventListener(action + 'Error', function (message, code) { report.pluginEvents.push(action + 'Error ' + code + ' ' + message); });
  }

  const opened = await session.open({ cpus: 1, ram: 128, disk: 64 });
  report.afterOpen = { operation: opened.status, state: session.state, stateName: session.stateName, cpus: session.cpus, ram: session.ram, memory: session.memory, disk: session.disk };
  show();
  const started = await session.start('#!/bin/sh\necho hello from the browser test\n');
  report.afterStart = { operation: started.status, state: session.state, stateName: session.stateName };
  show();

  try { await session.resume(); report.resumeWhileRunning = 'resolved'; } catch (error) { report.resumeWhileRunning = describe(error); }
  try { report.cap = { value: await session.setExecutionCap(50) }; } catch (error) { report.cap = describe(error); }
  await session.setProperty('greeting', 'hello');
  report.property = await session.getProperty('greeting');
  report.missingProperty = await session.getProperty('nothing-here');

  await until(() => report.pluginEvents.includes('start') && report.states.includes('running'), 15000, 'the start event');
  report.finalState = { state: session.state, stateName: session.stateName };
  report.phase = 'done';
  show();
}

document.getElementById('origin').textContent = location.origin;
document.getElementById('daemon').textContent = daemonURL;
const script = document.createElement('script');
script.src = daemonURL + '/vmsession.js';
script.onload = () => run().catch(error => {
  report.phase = 'failed';
  report.failure = String(error && error.stack || error);
  show();
});
script.onerror = () => { report.phase = 'failed'; report.failure = 'vmsession.js did not load from ' + daemonURL; show(); };
document.head.append(script);
show();
