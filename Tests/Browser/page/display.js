// A page on another origin than the daemon's: it logs in to a real appliance guest with vmsession.js, shows
// its screen with session.display(), takes session.screenshot(), and tries the display with a wrong
// token. What it saw goes to window.report, read by Tests/Browser/test_display.py.
'use strict';

const params = new URLSearchParams(location.search);
const daemonURL = params.get('daemon');
const report = window.report = { phase: 'loading' };

function show() {
  document.getElementById('phase').textContent = report.phase;
  document.getElementById('report').textContent = JSON.stringify(report, null, 2);
}

function describe(error) { return { code: error.code, message: error.message }; }

/** Pixels of a canvas (or an image drawn onto one) that are not black. */
function nonBlankPixels(source, width, height) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  context.drawImage(source, 0, 0);
  const data = context.getImageData(0, 0, width, height).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 0) count++;
  return count;
}

/** The display canvas's non-black pixels, as they are when asked (the test polls it). */
window.displayPixels = () => {
  const canvas = document.querySelector('#screen canvas');
  if (!canvas || !canvas.width) return null;
  return { width: canvas.width, height: canvas.height, nonBlank: nonBlankPixels(canvas, canvas.width, canvas.height) };
};

/** Opens a raw WebSocket and says how it ended: {opened, code}. */
function tryWebSocket(url) {
  return new Promise(resolve => {
    const socket = new WebSocket(url);
    let opened = false;
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => { opened = true; socket.close(); };
    socket.onclose = event => resolve({ opened, code: event.code });
  });
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
  // The test booted the guest already (one TCG guest for the whole module); the page logs in to it.
  const session = window.session = await daemon.requestSession(params.get('name'), params.get('secret'));
  report.stateName = session.stateName;
  report.displayURL = session.displayURL;

  report.phase = 'displaying'; show();
  window.rfb = await session.display(document.getElementById('screen'));
  report.connected = true;

  const wsBase = daemonURL.replace(/^http/, 'ws') + '/api/v1/sessions/' + session.id + '/display';
  report.wrongToken = await tryWebSocket(wsBase + '?token=wrong');
  report.rightToken = await tryWebSocket(wsBase + '?token=' + encodeURIComponent(session._token));

  report.phase = 'displayed'; show();
}

window.takeScreenshot = async () => {
  const blob = await window.session.screenshot();
  const bitmap = await createImageBitmap(blob);
  return { type: blob.type, width: bitmap.width, height: bitmap.height, nonBlank: nonBlankPixels(bitmap, bitmap.width, bitmap.height) };
};

run().catch(error => {
  report.phase = 'failed';
  report.failure = error && (error.code ? describe(error) : String(error.stack || error));
  show();
});
