// The daemon's own page: sessions live (one daemon-wide event stream), their controls, the templates,
// and the web origins waiting for the user's decision. It is served by the daemon, so it is same-origin and needs
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
    sessionChoices();
  }

  async function loadSessions() {
    const sessions = await admin.sessions();
    sessions.sort((a, b) => a.name.localeCompare(b.name));
    sessions.forEach(follow);
    knownSessions = sessions;
    sessionChoices();
    const tbody = byId('sessions');
    if (sessions.length === 0) emptyRow(tbody, 6, 'No sessions yet.');
    else tbody.replaceChildren(...sessions.map(sessionRow));
  }

  // Templates: the list, with the warm-ups from images under way (and those that failed, which left no
  // template), making one from a running session or from an image with a warm-up user-data, deleting one.
  // Refreshed every few seconds, every second while a warm-up runs, and soon after any session's operation
  // ends or its state changes (a template made, a session from one opened or closed).

  const TEMPLATE_REFRESH_MS = 3000;
  const WARM_UP_REFRESH_MS = 1000;
  let templateTimer = null;
  let templateLoads = 0;
  /** The sessions last listed, to name a template's sessions and to offer the running ones as a source. */
  let knownSessions = [];
  /** Per template name: the daemon's last refusal to delete it, shown in its row until it is deleted. */
  const templateRefusals = new Map();

  function size(bytes) {
    if (bytes >= 1 << 30) return (bytes / (1 << 30)).toFixed(1) + ' GiB';
    if (bytes >= 1 << 20) return (bytes / (1 << 20)).toFixed(1) + ' MiB';
    return Math.ceil(bytes / 1024) + ' KiB';
  }

  function sessionLabel(id) {
    const session = knownSessions.find(s => s.id === id);
    return session ? session.name : id.slice(0, 8);
  }

  function deleteTemplate(name) {
    if (!window.confirm('Delete template "' + name + '"? Its memory image and disk are removed.')) return;
    say('deleting template ' + name + '…');
    admin.deleteTemplate(name).then(() => {
      templateRefusals.delete(name);
      say('template ' + name + ' deleted');
      refreshTemplates(0);
    }, error => {
      templateRefusals.set(name, error.message);
      say('template ' + name + ' not deleted: ' + error.message + ' (' + error.code + ')', true);
      refreshTemplates(0);
    });
  }

  function templateRow(template, warmUp) {
    const from = warmUp ? 'warm-up of image ' + warmUp.image : 'session ' + sessionLabel(template.fromSession) + ' on image ' + template.baseVersion;
    // The refusal names the sessions that used it; once none does, it no longer holds.
    const refusal = template.sessions.length ? templateRefusals.get(template.name) : null;
    const row = element('tr', {}, [
      element('td', { title: 'made ' + new Date(template.created).toLocaleString() }, [template.name]),
      element('td', { textContent: from, title: template.cpus + ' cpu · ' + template.memory + ' MiB · at least ' + template.disk + ' MiB disk' }),
      element('td', { textContent: size(template.bytes), title: template.bytes + ' bytes' }),
      element('td', { className: 'users', textContent: template.sessions.length + (template.sessions.length ? ': ' + template.sessions.map(sessionLabel).join(', ') : '') }),
      element('td', { textContent: warmUp ? 'done in ' + Math.round((Date.parse(warmUp.updatedAt) - Date.parse(warmUp.createdAt)) / 1000) + ' s' : '—' }),
      element('td', { className: 'actions' }, [
        element('button', { type: 'button', className: 'delete', textContent: 'delete', onclick: () => deleteTemplate(template.name) }),
        ...(refusal ? [' ', element('span', { className: 'refusal', textContent: refusal })] : []),
      ]),
    ]);
    row.dataset.template = template.name;
    row.dataset.kind = 'template';
    row.dataset.sessions = String(template.sessions.length);
    row.dataset.bytes = String(template.bytes);
    return row;
  }

  function warmUpRow(warmUp) {
    const p = warmUp.progress;
    const status = warmUp.status === 'running'
      ? [element('progress', { max: p.total || 1, value: p.done }), ' ', p.message]
      : [element('span', { className: 'refusal', textContent: 'failed: ' + (warmUp.error ? warmUp.error.message + ' (' + warmUp.error.code + ')' : '') })];
    const row = element('tr', {}, [
      element('td', {}, [warmUp.name]),
      element('td', { textContent: 'warm-up of image ' + warmUp.image }),
      element('td', { textContent: '—' }),
      element('td', { textContent: warmUp.sessionId ? 'its own: ' + sessionLabel(warmUp.sessionId) : '' }),
      element('td', { className: 'warm-up' }, status),
      element('td', {}, []),
    ]);
    row.dataset.template = warmUp.name;
    row.dataset.kind = 'warm-up';
    row.dataset.status = warmUp.status;
    return row;
  }

  async function loadTemplates() {
    const load = ++templateLoads;
    const { templates, warmUps } = await admin.templates();
    if (load !== templateLoads) return null;  // a later load began; its answer is the one to show
    const names = new Set(templates.map(t => t.name));
    const rows = templates.map(t => templateRow(t, warmUps.find(w => w.name === t.name && w.status === 'succeeded')));
    for (const warmUp of warmUps) {
      if (warmUp.status === 'running' || (warmUp.status === 'failed' && !names.has(warmUp.name))) rows.push(warmUpRow(warmUp));
    }
    const tbody = byId('templates');
    if (rows.length === 0) emptyRow(tbody, 6, 'No templates yet.');
    else tbody.replaceChildren(...rows);
    return warmUps.some(w => w.status === 'running');
  }

  /** Loads the templates after `wait` ms, then again and again (sooner while a warm-up runs) until the token goes. */
  function refreshTemplates(wait) {
    if (!admin) return;
    clearTimeout(templateTimer);
    templateTimer = setTimeout(() => {
      templateTimer = null;
      loadTemplates().then(running => {
        if (running !== null && admin && !templateTimer) refreshTemplates(running ? WARM_UP_REFRESH_MS : TEMPLATE_REFRESH_MS);
      }, error => {
        say('Cannot list the templates: ' + error.message, true);
        if (admin && !templateTimer) refreshTemplates(TEMPLATE_REFRESH_MS);
      });
    }, wait);
  }

  /** The running sessions, offered as a template's source; the choice is kept while it still runs. */
  function sessionChoices() {
    const select = byId('tfs-session');
    const chosen = select.value;
    const running = knownSessions.filter(s => s.stateName === 'running');
    select.replaceChildren(...running.map(s => element('option', { value: s.id, textContent: s.name })));
    if (running.some(s => s.id === chosen)) select.value = chosen;
  }

  function makeTemplate(name, source, what) {
    if (!admin) { say('Enter the admin token first.', true); return; }
    say('making template ' + name + ' from ' + what + '…');
    let shown = false;
    admin.makeTemplate(name, source, warmUp => {
      say('warming up template ' + name + ': ' + warmUp.progress.message + ' (' + warmUp.progress.done + '/' + warmUp.progress.total + ')');
      if (!shown) { shown = true; refreshTemplates(0); }
    }).then(() => {
      say('template ' + name + ' made from ' + what);
      refreshTemplates(0);
    }, error => {
      say('template ' + name + ' not made: ' + error.message + ' (' + error.code + ')', true);
      refreshTemplates(0);
    });
  }

  byId('template-from-session').addEventListener('submit', event => {
    event.preventDefault();
    const select = byId('tfs-session');
    if (!select.value) { say('No running session to make a template of.', true); return; }
    makeTemplate(byId('tfs-name').value.trim(), { fromSession: select.value }, 'session ' + sessionLabel(select.value));
  });

  byId('template-from-image').addEventListener('submit', event => {
    event.preventDefault();
    const parameters = {};
    for (const line of byId('tfi-parameters').value.split('\n')) {
      if (!line.trim()) continue;
      const equals = line.indexOf('=');
      if (equals < 1) { say('A parameter is name=value, one a line; not "' + line.trim() + '".', true); return; }
      parameters[line.slice(0, equals).trim()] = line.slice(equals + 1);
    }
    const image = byId('tfi-image').value.trim();
    const source = { fromImage: image, userData: byId('tfi-user-data').value, parameters };
    for (const [field, id] of [['cpus', 'tfi-cpus'], ['memory', 'tfi-memory'], ['disk', 'tfi-disk'], ['readyTimeout', 'tfi-timeout']]) {
      if (byId(id).value !== '') source[field] = Number(byId(id).value);
    }
    makeTemplate(byId('tfi-name').value.trim(), source, 'image ' + image);
  });

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
    clearTimeout(templateTimer);
    templateTimer = null;
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
    for (const type of ['operationCompleted', 'operationFailed', 'stateChanged']) admin.addEventListener(type, () => refreshTemplates(200));
    refreshTemplates(0);
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
    emptyRow(byId('templates'), 6, 'Enter the admin token to see the templates.');
    knownSessions = [];
    sessionChoices();
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
    byId('tfi-images').replaceChildren(...(info.imageVersions || []).map(version => element('option', { value: version })));
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) { byId('token').value = saved; useToken(saved); }
  }, error => {
    byId('daemon').textContent = 'vmsessiond does not answer: ' + error.message;
  });
})();
