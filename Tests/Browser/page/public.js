// A page on a public HTTPS site (or plain HTTP, for the refusal): connect() on load, and again from a click;
// each outcome goes to window.outcomes (read by the test), and a connected page opens and starts a session.
'use strict';

const daemonURL = params.get('daemon');
const outcomes = window.outcomes = [];

function note(entry) {
  outcomes.push(entry);
  document.getElementById('log').textContent += JSON.stringify(entry) + '\n';
}

async function attempt(when) {
  let daemon;
  try {
    daemon = await VMSession.connect(daemonURL);
  } catch (error) {
    note({ when, outcome: error.code, isVMSessionError: error instanceof VMSession.Error, name: error.name, message: error.message });
    return;
  }
  note({ when, outcome: 'connected', version: VMSession.version });
  try {
    const session = await daemon.requestSession(params.get('name'), 'public-secret');
    const states = [];
    session.addEventListener('stateChanged', event => states.push(event.detail.state));
    await session.open({ memory: 128, disk: 64 });
    await session.start('#!/bin/sh\necho hello\n');
    await new Promise(resolve => setTimeout(resolve, 500));
    note({ when, session: session.stateName, states });
  } catch (error) {
    note({ when, failed: error.code, message: error.message });
  }
}

attempt('load');
document.getElementById('connect').addEventListener('click', () => attempt('click'));
