// A page on another origin than the daemon's. With ?mode=owner it starts a real guest whose user-data
// writes its API's page, and reaches that API with session.guest.fetch; with ?mode=stranger (served from
// an origin the user never approved) it tries the same URL with a valid token. What it saw goes to
// window.report, read by Tests/Browser/test_guest_api.py.
'use strict';

const params = new URLSearchParams(location.search);
const daemonURL = params.get('daemon');
const report = window.report = { phase: 'loading' };

function show() {
  document.getElementById('phase').textContent = report.phase;
  document.getElementById('report').textContent = JSON.stringify(report, null, 2);
}

/** What a fetch came to: its status and body, or that the browser refused to hand it over. */
async function outcome(promise) {
  try {
    const response = await promise;
    return { status: response.status, body: await response.text() };
  } catch (error) {
    return { rejected: String(error && error.name) };
  }
}

async function owner() {
  const daemon = await VMSession.connect(daemonURL);
  const session = await daemon.requestSession(params.get('name'), 'guest-secret');
  report.session = session.id;
  report.token = session._token;
  const available = new Promise(resolve => session.addEventListener('apiAvailable', e => resolve(e.detail)));
  await session.open({ cpus: 1, memory: 256, disk: 64 });
  report.phase = 'starting';
  show();
  await session.start('#!/bin/sh\necho "guest says ${word}" > /www/index.html\n', { parameters: { word: params.get('word') } });
  report.phase = 'waiting for the guest API';
  show();
  report.available = await available;
  report.apiURL = session.apiURL;
  report.guestURL = session.guest.url;
  report.viaLibrary = await outcome(session.guest.fetch('/'));
  report.viaLibraryRelative = await outcome(session.guest.fetch('index.html'));
  report.missing = await outcome(session.guest.fetch('/no-such-file'));
  report.wrongToken = await outcome(fetch(session.apiURL + '/', { headers: { Authorization: 'Bearer wrong' } }));
  report.noToken = await outcome(fetch(session.apiURL + '/'));
  report.oversized = await outcome(session.guest.fetch('/', { method: 'POST', body: new Uint8Array(9 << 20) }));
  // Many at once: each served or refused with 429, and the guest still answers afterwards.
  const many = await Promise.all(Array.from({ length: 20 }, () => outcome(session.guest.fetch('/'))));
  report.manyStatuses = many.map(m => m.status ?? m.rejected);
  report.afterMany = await outcome(session.guest.fetch('/'));
  report.phase = 'done';
  show();
}

async function stranger() {
  const url = daemonURL + '/api/v1/sessions/' + params.get('session') + '/guest/';
  report.withToken = await outcome(fetch(url, { headers: { Authorization: 'Bearer ' + params.get('token') } }));
  report.withQueryToken = await outcome(fetch(url + '?token=' + encodeURIComponent(params.get('token'))));
  report.phase = 'done';
  show();
}

const script = document.createElement('script');
script.src = daemonURL + '/vmsession.js';
script.onload = () => {
  (params.get('mode') === 'stranger' ? stranger() : owner()).catch(error => {
    report.phase = 'failed';
    report.failure = { code: error.code, message: error.message };
    show();
  });
};
script.onerror = () => { report.phase = 'failed'; report.failure = 'vmsession.js did not load'; show(); };
document.head.appendChild(script);
