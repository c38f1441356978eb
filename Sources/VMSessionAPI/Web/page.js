// The daemon's own page: sessions live (one daemon-wide event stream), their controls, and the web
// origins waiting for the user's decision. It is served by the daemon, so it is same-origin and needs
// no approval; the admin token is pasted once per tab and kept in sessionStorage.
'use strict';

(function () {
  const TOKEN_KEY = 'vmsessiond.adminToken';
  const ACTIONS = ['start', 'pause', 'resume', 'stop', 'hibernate', 'reset', 'snapshot', 'revert', 'close'];
  /** What each state allows (the daemon's state table); the daemon checks again. */
  const ALLOWED = {
    closed: ['open'], open: ['start', 'close'], running: ['pause', 'stop', 'hibernate', 'reset', 'snapshot', 'revert', 'close'],
    paused: ['resume', 'stop', 'hibernate', 'snapshot', 'revert', 'close'], saved: ['start', 'close'], error: ['open', 'start', 'close'],
  };
  const SESSION_EVENTS = ['stateChanged', 'progress', 'operationStarted', 'operationCompleted', 'operationFailed',
    'executionCapChanged', 'error'];
  const ORIGIN_REFRESH_MS = 3000;

  const byId = id => document.getElementById(id);
  let daemon = null;
  let admin = null;
  let originTimer = null;
  /** Per session id: {progress: {done, total, message} | null, note: string}. */
  const activity = new Map();
  const followed = new WeakSet();

  function say(text, isError) {
    byId('message').textContent = text;
    byId('message').className = isError ? 'error' : '';
  }

  function element(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children || []) node.append(child);
    return node;
  }

  function emptyRow(tbody, columns, text) {
    tbody.replaceChildren(element('tr', {}, [element('td', { colSpan: columns, className: 'empty', textContent: text })]));
  }

  // Sessions.

  function follow(session) {
    if (followed.has(session)) return;
    followed.add(session);
    for (const type of SESSION_EVENTS) {
      session.addEventListener(type, event => {
        const info = activity.get(session.id) || { progress: null, note: '' };
        if (type === 'progress') info.progress = event.detail;
        if (type === 'operationStarted') { info.progress = null; info.note = event.detail.action + '…'; }
        if (type === 'operationCompleted') { info.progress = null; info.note = event.detail.action + ' done'; }
        if (type === 'operationFailed' || type === 'error') {
          const error = event.detail.error || event.detail;
          info.progress = null;
          info.note = (event.detail.action ? event.detail.action + ' failed: ' : '') + error.message;
        }
        activity.set(session.id, info);
        renderSession(session);
      });
    }
  }

  function progressCell(session) {
    const info = activity.get(session.id);
    if (info && info.progress) {
      const p = info.progress;
      return [element('progress', { max: p.total || 1, value: p.done }), ' ', p.message];
    }
    return [info ? info.note : ''];
  }

  function resources(session) {
    if (session.cpus === null) return '—';
    return session.cpus + ' cpu · ' + session.memory + ' MiB · ' + session.disk + ' MiB disk · ' + session.version;
  }

  /** What a snapshot action needs first: a new name, or one of the session's snapshots; null to give up. */
  async function snapshotName(session, action) {
    if (action === 'snapshot') return window.prompt('Name of the snapshot of "' + session.name + '" (letters, digits, . _ -):');
    const names = (await session.snapshots()).map(s => s.name + ' (' + s.state + ')');
    if (names.length === 0) { say(session.name + ' has no snapshot yet.', true); return null; }
    return window.prompt('Revert "' + session.name + '" to which snapshot? ' + names.join(', '));
  }

  async function act(session, action) {
    if (action === 'close' && !window.confirm('Close "' + session.name + '"? Its VM, disks and snapshots are removed.')) return;
    let name;
    if (action === 'snapshot' || action === 'revert') {
      try { name = await snapshotName(session, action); } catch (error) { say(error.message, true); return; }
      if (!name) return;
      name = name.replace(/ \((running|paused)\)$/, '');
    }
    say(action + ' ' + session.name + '…');
    session[action](name).then(
      () => say(action + ' ' + session.name + ': done'),
      error => say(action + ' ' + session.name + ' failed: ' + error.message + ' (' + error.code + ')', true));
  }

  function setCap(session, input) {
    session.setExecutionCap(input.value).then(
      cap => { say(session.name + ': cap set to ' + cap + ' %'); renderSession(session); },
      error => say('Cap of ' + session.name + ' not set: ' + error.message + ' (' + error.code + ')', true));
  }

  function sessionRow(session) {
    const allowed = ALLOWED[session.stateName] || [];
    const buttons = ACTIONS.map(action => element('button', {
      type: 'button', textContent: action, disabled: !allowed.includes(action), onclick: () => act(session, action),
    }));
    const cap = element('input', { type: 'number', min: 1, max: 100, value: session.executionCap, title: 'execution cap, % of a core per vCPU' });
    const row = element('tr', {}, [
      element('td', { title: session.id }, [session.name]),
      element('td', {}, [element('span', { className: 'state ' + session.stateName, textContent: session.stateName })]),
      element('td', {}, progressCell(session)),
      element('td', { textContent: resources(session) }),
      element('td', { className: 'cap' }, [cap, ' ', element('button', { type: 'button', textContent: 'set', onclick: () => setCap(session, cap) })]),
      element('td', { className: 'actions' }, buttons),
    ]);
    row.dataset.sessionId = session.id;
    row.dataset.name = session.name;
    row.dataset.state = session.stateName;
    decorateConsole(row, session);
    decorateDisplay(row, session);
    return row;
  }

  function renderSession(session) {
    const old = byId('sessions').querySelector('tr[data-session-id="' + session.id + '"]');
    if (old) old.replaceWith(sessionRow(session));
  }

  async function loadSessions() {
    const sessions = await admin.sessions();
    sessions.sort((a, b) => a.name.localeCompare(b.name));
    sessions.forEach(follow);
    const tbody = byId('sessions');
    if (sessions.length === 0) emptyRow(tbody, 6, 'No sessions yet.');
    else tbody.replaceChildren(...sessions.map(sessionRow));
  }

  // Origins.

  function decide(record, decision) {
    admin[decision](record.origin).then(
      () => { say(record.origin + ': ' + (decision === 'approve' ? 'approved' : 'denied')); return loadOrigins(); },
      error => say(decision + ' ' + record.origin + ' failed: ' + error.message, true));
  }

  async function loadOrigins() {
    if (!admin) return;
    const origins = await admin.origins();
    const tbody = byId('origins');
    if (origins.length === 0) { emptyRow(tbody, 5, 'No page has asked yet.'); return; }
    tbody.replaceChildren(...origins.map(record => {
      const row = element('tr', {}, [
        element('td', { textContent: record.origin }),
        element('td', { className: 'status ' + record.status, textContent: record.status }),
        element('td', { textContent: String(record.requests) }),
        element('td', { textContent: record.lastSeen ? new Date(record.lastSeen).toLocaleString() : '' }),
        element('td', { className: 'actions' }, [
          element('button', { type: 'button', className: 'approve', textContent: 'Approve', disabled: record.status === 'approved', onclick: () => decide(record, 'approve') }),
          ' ',
          element('button', { type: 'button', className: 'deny', textContent: 'Deny', disabled: record.status === 'denied', onclick: () => decide(record, 'deny') }),
        ]),
      ]);
      row.dataset.origin = record.origin;
      row.dataset.status = record.status;
      return row;
    }));
  }

  // The token.

  function stop() {
    if (admin) admin.disconnect();
    admin = null;
    if (originTimer) clearInterval(originTimer);
    originTimer = null;
  }

  async function useToken(token) {
    stop();
    admin = daemon.admin(token);
    try {
      await loadSessions();
    } catch (error) {
      stop();
      say(error.code === 'unauthorized' ? 'That is not the admin token.' : 'Cannot list the sessions: ' + error.message, true);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    admin.addEventListener('sessionCreated', () => loadSessions().catch(error => say(error.message, true)));
    admin.addEventListener('reconnected', () => loadSessions().catch(error => say(error.message, true)));
    await admin.watch();
    await loadOrigins().catch(error => say(error.message, true));
    originTimer = setInterval(() => loadOrigins().catch(error => say(error.message, true)), ORIGIN_REFRESH_MS);
    say('');
  }

  byId('token-form').addEventListener('submit', event => {
    event.preventDefault();
    const token = byId('token').value.trim();
    if (token) useToken(token);
  });

  byId('forget-token').addEventListener('click', () => {
    stop();
    sessionStorage.removeItem(TOKEN_KEY);
    byId('token').value = '';
    emptyRow(byId('sessions'), 6, 'Enter the admin token to see the sessions.');
    emptyRow(byId('origins'), 5, 'Enter the admin token to see the origins.');
    say('Token forgotten.');
  });

  // console: a Console button per session whose VM has started, and its serial console (xterm.js) below the
  // table. It stays open while the session is stopped, started, hibernated and restored.

  const consoleView = { session: null, view: null };

  function decorateConsole(row, session) {
    const available = !['closed', 'opening', 'closing'].includes(session.stateName);
    row.querySelector('td.actions').append(' ', element('button', {
      type: 'button', textContent: 'console', className: 'console', disabled: !available, onclick: () => showConsole(session),
    }));
  }

  async function showConsole(session) {
    closeConsole();
    consoleView.session = session;
    byId('console-section').hidden = false;
    byId('console-title').textContent = 'Console of ' + session.name;
    try {
      consoleView.view = await session.console(byId('console-screen'));
      consoleView.view.terminal.focus();
    } catch (error) {
      say('Cannot open the console: ' + error.message, true);
    }
  }

  function closeConsole() {
    if (consoleView.view) consoleView.view.close();
    consoleView.view = null;
    consoleView.session = null;
    byId('console-screen').replaceChildren();
    byId('console-section').hidden = true;
  }

  byId('console-close').addEventListener('click', closeConsole);
  window.consoleView = consoleView;  // for a look from the browser's developer tools (and the browser tests)

  // display: a Display button per running session, and the session's screen (noVNC) below the table.
  // `#display=<session id>` (a session's displayURL) opens that session's display once the token is in.

  const display = { session: null, rfb: null, wanted: (location.hash.match(/^#display=([0-9a-f-]{36})$/i) || [])[1] || null };

  function decorateDisplay(row, session) {
    const running = session.stateName === 'running' || session.stateName === 'paused';
    row.querySelector('td.actions').append(' ', element('button', {
      type: 'button', textContent: 'display', className: 'display', disabled: !running, onclick: () => showDisplay(session),
    }));
    if (running && display.wanted === session.id) {
      display.wanted = null;
      setTimeout(() => showDisplay(session), 0);
    }
  }

  async function showDisplay(session) {
    closeDisplay();
    display.session = session;
    byId('display-section').hidden = false;
    byId('display-title').textContent = 'Display of ' + session.name;
    try {
      display.rfb = await session.display(byId('display-screen'));
    } catch (error) {
      say('Cannot open the display: ' + error.message, true);
    }
  }

  function closeDisplay() {
    if (display.rfb) display.rfb.disconnect();
    display.rfb = null;
    display.session = null;
    byId('display-screen').replaceChildren();
    byId('display-section').hidden = true;
  }

  byId('display-close').addEventListener('click', closeDisplay);
  byId('display-screenshot').addEventListener('click', () => {
    if (!display.session) return;
    display.session.screenshot().then(blob => {
      const link = byId('display-download');
      if (link.href) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(blob);
      link.hidden = false;
      link.click();
    }, error => say('Cannot take a screenshot: ' + error.message, true));
  });

  VMSession.connect(location.origin).then(connected => {
    daemon = connected;
    const info = daemon.info;
    byId('daemon').textContent = 'vmsessiond ' + info.version + ' at ' + location.origin + ' · ' +
      (info.hypervisor && info.hypervisor.uri ? info.hypervisor.uri : '') + ' · images: ' + (info.imageVersions || []).join(', ');
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) { byId('token').value = saved; useToken(saved); }
  }, error => {
    byId('daemon').textContent = 'vmsessiond does not answer: ' + error.message;
  });
})();
