/*! vmsession.js 1.3.0 | the web-page client of vmsessiond, the local VM session daemon */
/*
 * vmsession.js: use a local vmsessiond from a web page. One file, no dependency, no build step. The daemon
 * serves it at /vmsession.js, but a page on a public site loads it from ITS OWN origin (a copy of this file,
 * with its integrity hash: see the README, "Pages on public sites"), since a browser may block the page's
 * requests to 127.0.0.1 until the user allows them (Local Network Access).
 *
 *   const d = await VMSession.connect('http://127.0.0.1:7011');
 *   const s = await d.requestSession('my-app', 'a secret only my app knows');
 *   s.addEventListener('progress', e => console.log(e.detail.message, e.detail.done, '/', e.detail.total));
 *   await s.open({ cpus: 1, memory: 256, disk: 1024 });
 *   await s.start('#!/bin/sh\necho hello\n');
 *
 * Promises. Every method returns a Promise. Long actions (open, start, stop, hibernate, close) resolve
 * with the finished operation when it has ended, not when it was accepted; every failure rejects with a
 * VMSession.Error carrying .code (the daemon's stable code, e.g. 'invalid_state'), .legacyCode (the
 * plugin's number, e.g. -8) and the daemon's message.
 *
 * Events. A Session is an EventTarget. Each daemon event arrives as a CustomEvent whose .detail is the
 * event's `data` (and .eventId, .time, .sessionId the rest): sessionCreated, stateChanged, progress,
 * operationStarted, operationCompleted, operationFailed, executionCapChanged, propertyChanged, error,
 * apiAvailable, apiUnavailable, snapshotCreated, snapshotReverted, snapshotDeleted, hostUnreachable,
 * hostReachable (the libvirt host of the session's VM was lost, or is back). The session's
 * properties are updated before its listeners run.
 * The stream is an EventSource, which reconnects by itself and sends Last-Event-ID; when the browser
 * gives up on it (an HTTP error, the daemon restarting), it is reopened with ?since=<last event id>
 * after a back-off, so no event is lost, and none is delivered twice.
 *
 * Compatibility with the CernVM Web API plugin (its manual, appendices A-D). A page written for the plugin
 * runs with only its first lines changed: `VMSession.connect(url).then(function (o) { ... })` instead of
 * the <embed> element, then the page as it was.
 *
 *   o.hypervisorName, o.hypervisorVersion        libvirt's driver (QEMU) and its version
 *   o.requestSession(name, key, ok, fail)        returns 1 and calls ok(session) with a PluginSession (below)
 *                                                or fail(legacyCode), e.g. fail(-20); without callbacks it
 *                                                returns a Promise of a Promise-based Session
 *   o.requestDaemonAccess()                      isRunning, isSystemIdle, idleTime (refreshed every 5 s); for
 *                                                an origin approved as privileged also a writable idleTime,
 *                                                path, start(), stop()
 *
 * A PluginSession behaves as the manual says: open/start/pause/resume/stop/hibernate/reset/close return 1
 * (scheduled) or a negative code at once (-8 when the state the page holds does not allow it), and every
 * failure is also the <action>Error(message, code) event; every listener on a plugin event name (appendix B)
 * gets positional arguments; executionCap and daemonControlled/MinCap/MaxCap/Flags are plain fields (writes
 * send the request, reads show the written value until the daemon confirms); getProperty answers at once
 * from a copy kept by propertyChanged; rdpURL is the daemon's page with the session's display.
 *
 * A Promise-based Session (requestSession without callbacks, and the admin's view) has the same fields,
 * read-only, and methods that return Promises; a listener declared with two or more parameters on a plugin
 * event name gets the positional arguments, any other the CustomEvent. Both: state numbers 0-6 as in
 * appendix D plus 7 saved, 8 stopping, 9 saving, 10 closing; errors carry .legacyCode (appendix A) and
 * .code (the daemon's name); apiURL is the daemon's proxy for the guest's API (s.guest.fetch(path, init)).
 *
 * Seeing the VM. s.console(element, {readOnly}) shows the serial console in an xterm.js terminal (history,
 * then live; typing reaches the guest), s.display(element, {readOnly}) the screen through noVNC,
 * s.screenshot() a PNG Blob. Several tabs may watch at once; both libraries are Debian's, served by the daemon.
 *
 * What connect(url) tells the page (a VMSession.Error's .code when it rejects; on a public site, call it
 * from a click, since the browser may ask the user first):
 *   local_network_prompt  the browser would ask the user to let this site reach the local network: show
 *                         your explanation, then call connect() again from a user gesture (no request was
 *                         sent, so no prompt was shown)
 *   local_network_denied  the user (or the browser) refused this site access to the local network: tell
 *                         the user how to allow it for this site (site settings, "Local network access")
 *   insecure_context      a page served over plain HTTP from an address that is not local: Chromium never
 *                         lets it reach 127.0.0.1, whatever the user does; serve the page over HTTPS
 *   not_running           nothing answers at the daemon's address (before 1.1.0: 'unreachable')
 *   origin_not_approved   the daemon answers, but not to this origin: the user approves it once
 *                         (`vmsessionctl origins approve ORIGIN`, or on the daemon's page)
 * The daemon's refusal of an origin carries no CORS headers, so the browser hides it: the fetch fails as if
 * nothing listened. connect() then asks for /vmsession.js in no-cors mode (public, never refused): if that
 * answers, the daemon refused this origin; if not, nothing is there. Every failure this library reports (a
 * rejected Promise, an event's detail) is a VMSession.Error with a .code, never a bare TypeError.
 *
 * Order. Replies and events are applied in the order they were produced: each object numbers the requests
 * it sends, a reply older than one already applied (or than an event that changed the same object since it
 * was sent) is dropped, and writes to the daemon's settings are sent one after the other.
 *
 * Connections. A page holds ONE event stream to the daemon however many sessions it follows (and however
 * many tabs of the same site are open: the tabs elect one that holds it and pass the events on with a
 * BroadcastChannel), because browsers open at most six HTTP/1.1 connections per site. Streams and sockets
 * are closed on `pagehide` and reopened on `pageshow` (back/forward cache), replaying what was missed.
 */
(function (global) {
  'use strict';

  const API = '/api/v1';

  /** The plugin's state numbers (appendix D) and the daemon's additions. */
  const STATES = Object.freeze({
    closed: 0, opening: 1, open: 2, starting: 3, running: 4, error: 5, paused: 6,
    saved: 7, stopping: 8, saving: 9, closing: 10,
  });

  /** The legacy numbers of the errors this library raises itself (appendix A: -7 external, -13 not trusted). */
  const LOCAL_LEGACY_CODES = Object.freeze({
    not_running: -7, unreachable: -7, origin_not_approved: -13, invalid_response: -7, invalid_usage: -99,
    local_network_prompt: -13, local_network_denied: -13, insecure_context: -13, unavailable: -7,
  });

  /** The daemon's event types the stream listens for (EventSource only delivers the names it is given). */
  const EVENT_TYPES = Object.freeze([
    'sessionCreated', 'stateChanged', 'progress', 'operationStarted', 'operationCompleted', 'operationFailed',
    'executionCapChanged', 'propertyChanged', 'error', 'apiAvailable', 'apiUnavailable', 'debug',
    'daemonControlChanged', 'idleChanged', 'snapshotCreated', 'snapshotReverted', 'snapshotDeleted',
    'hostUnreachable', 'hostReachable',
    // Not stored: sent first when a replay reaches into events the daemon's retention removed.
    'eventsDropped',
  ]);

  /** The plugin's actions; each has an event of its name and an `<action>Error` event. */
  const ACTIONS = Object.freeze(['open', 'start', 'pause', 'resume', 'stop', 'hibernate', 'reset', 'close']);

  /** Appendix B: how a plugin-style listener (two or more parameters) is called, per event name. */
  function positionalArguments(type, detail) {
    const d = detail || {};
    if (type === 'progress') return [d.done, d.total, d.message];
    if (type === 'error') return [d.message, d.legacyCode, d.code];
    if (type === 'apiAvailable') return [d.ip, d.apiURL];
    if (type === 'debug') return [d.message];
    if (type.endsWith('Error') && ACTIONS.includes(type.slice(0, -5))) return [d.message, d.legacyCode];
    if (ACTIONS.includes(type) || type === 'apiUnavailable') return [];
    return null; // not a plugin event: the listener gets the Event
  }

  /** An error from the daemon or from talking to it: .code, .legacyCode, .status (HTTP, 0 if none). */
  class VMSessionError extends Error {
    constructor(code, message, legacyCode, status, retryAfter) {
      super(message);
      this.name = 'VMSessionError';
      this.code = code;
      this.legacyCode = legacyCode !== undefined ? legacyCode : (LOCAL_LEGACY_CODES[code] !== undefined ? LOCAL_LEGACY_CODES[code] : -7);
      this.status = status || 0;
      if (retryAfter !== undefined) this.retryAfter = retryAfter;
    }

    /** From the daemon's `{code, legacyCode, message, retryAfter?}`. */
    static from(info, status) {
      const e = info || {};
      return new VMSessionError(e.code || 'internal_error', e.message || 'vmsessiond failed without saying why.',
        e.legacyCode, status, e.retryAfter);
    }
  }

  function delay(ms) { return new Promise(resolve => setTimeout(resolve, ms)); }

  /**
   * Numbers the requests one object sends, so that a reply that arrives late never overwrites what a newer
   * reply, an event, or the page's own change already set.
   */
  class Sequence {
    constructor() { this.sent = 0; this.applied = 0; }
    /** A ticket for a request about to be sent. */
    take() { return ++this.sent; }
    /** Whether the reply to `ticket` is newer than everything applied so far (it is then applied). */
    accept(ticket) {
      if (ticket <= this.applied) return false;
      this.applied = ticket;
      return true;
    }
    /** Something newer than every reply in flight was applied (an event, a local change): drop those replies. */
    supersede() { this.applied = this.sent; }
  }

  /** What holds a connection open: closed on `pagehide`, reopened on `pageshow` (back/forward cache). */
  const lifecycle = new Set();
  if (typeof global.addEventListener === 'function') {
    global.addEventListener('pagehide', () => { for (const held of Array.from(lifecycle)) held._suspend(); });
    global.addEventListener('pageshow', event => {
      if (event.persisted) for (const held of Array.from(lifecycle)) held._resume();
    });
  }

  // Local Network Access: browsers gate requests from a public (or private) page to 127.0.0.1.

  /** The permission's names, newest first: Chromium's `loopback-network`, then earlier and other browsers' names. */
  const LOCAL_NETWORK_PERMISSIONS = Object.freeze(['loopback-network', 'local-network-access', 'local-network']);

  /**
   * This page's Local Network Access permission: 'granted', 'prompt' or 'denied'; null when the browser has
   * no such permission (it does not gate requests to the loopback: Firefox, Safari today).
   */
  async function localNetworkPermission() {
    const permissions = global.navigator && global.navigator.permissions;
    if (!permissions || typeof permissions.query !== 'function') return null;
    for (const name of LOCAL_NETWORK_PERMISSIONS) {
      try { return (await permissions.query({ name })).state; } catch (ignored) { /* not this browser's name */ }
    }
    return null;
  }

  /** Whether the page itself is on the loopback (then nothing gates its requests to the daemon). */
  function pageIsLoopback() {
    const host = global.location ? String(global.location.hostname).toLowerCase() : 'localhost';
    return host === 'localhost' || host.endsWith('.localhost') || /^127\./.test(host) || host === '[::1]' || host === '::1';
  }

  /** Whether the page is handling a user gesture (unknown: assume so, and let the browser decide). */
  function userIsActive() {
    const activation = global.navigator && global.navigator.userActivation;
    return activation ? !!activation.isActive : true;
  }

  /** Whether fetch() takes `targetAddressSpace` here (an unknown value of a known option throws). */
  const TARGET_LOOPBACK = (() => {
    try { new Request('http://127.0.0.1/', { targetAddressSpace: 'loopback' }); return true; } catch (e) { return false; }
  })();

  /** fetch() options for the daemon: `targetAddressSpace: 'loopback'` where the browser knows it. */
  function toDaemon(init) {
    const options = Object.assign({}, init || {});
    if (TARGET_LOOPBACK) options.targetAddressSpace = 'loopback';
    return options;
  }

  /**
   * Why a request to the daemon failed, when the browser's Local Network Access is the reason; null when it
   * is not (the page is on the loopback, the browser does not gate it, or the user allowed it).
   */
  async function localNetworkRefusal() {
    if (pageIsLoopback()) return null;
    const state = await localNetworkPermission();
    if (state === null || state === 'granted') return null;
    const origin = global.location ? global.location.origin : 'this page';
    if (!global.isSecureContext) {
      return new VMSessionError('insecure_context',
        'This page (' + origin + ') is served over plain HTTP from an address that is not local; the browser does not ' +
        'let such a page reach the local network (127.0.0.1), whatever the user does. Serve the page over HTTPS.');
    }
    if (state === 'prompt' && !userIsActive()) {
      return new VMSessionError('local_network_prompt',
        'The browser will ask the user to let ' + origin + ' reach apps on this device (Local Network Access). Explain ' +
        'why first, then call VMSession.connect() again from a click.');
    }
    return new VMSessionError('local_network_denied',
      'The browser did not let ' + origin + ' reach apps on this device (Local Network Access was refused). The user can ' +
      'allow it in the site\'s settings (the lock icon in the address bar, "Local network access"), then reload the page.');
  }

  /** A CustomEvent with the daemon event's data as detail and its id, time and session alongside. */
  function makeEvent(type, detail, message) {
    const event = new CustomEvent(type, { detail });
    if (message) {
      Object.defineProperties(event, {
        eventId: { value: message.eventId }, time: { value: message.time }, sessionId: { value: message.sessionId },
      });
    }
    return event;
  }

  /**
   * An EventTarget whose listeners may be plugin-style: a function with two or more parameters on a
   * plugin event name is called with the plugin's positional arguments.
   */
  class CompatibleEventTarget extends EventTarget {
    constructor() {
      super();
      this._wrappers = new Map(); // listener -> Map(type -> wrapper)
    }

    /** Whether `listener` on `type` is called with the plugin's positional arguments instead of an Event. */
    _positional(type, listener) {
      return listener.length >= 2 && positionalArguments(String(type), {}) !== null;
    }

    addEventListener(type, listener, options) {
      if (typeof listener === 'function' && this._positional(type, listener)) {
        const byType = this._wrappers.get(listener) || new Map();
        let wrapper = byType.get(type);
        if (!wrapper) {
          wrapper = event => listener.apply(this, positionalArguments(event.type, event.detail));
          byType.set(type, wrapper);
          this._wrappers.set(listener, byType);
        }
        return super.addEventListener(type, wrapper, options);
      }
      return super.addEventListener(type, listener, options);
    }

    removeEventListener(type, listener, options) {
      const byType = this._wrappers.get(listener);
      return super.removeEventListener(type, (byType && byType.get(type)) || listener, options);
    }
  }

  /**
   * One EventSource with replay: EventSource reconnects by itself after a dropped connection and sends
   * Last-Event-ID; when it gives up (readyState CLOSED: an HTTP error, a refused origin), this reopens it
   * with &since=<last id> after a back-off (0.5 s doubling to 30 s). Events at or below the last id seen
   * are dropped, so a replay that overlaps delivers nothing twice. Closed on pagehide, reopened (with the
   * events missed meanwhile) on pageshow.
   */
  class ReplayingStream {
    constructor(url, onMessage, onReopen, options) {
      const opts = options || {};
      this.url = url;
      this.lastEventId = opts.since || 0;
      this._onMessage = onMessage;
      this._onReopen = onReopen;
      this._onOpen = opts.onOpen || null;
      this._beforeRetry = opts.beforeRetry || null;
      this._failures = 0;
      this._closed = false;
      this._opened = false;
      this._source = null;
      this._timer = null;
    }

    /** Opens the stream; resolves once it is connected, or after `timeoutMs` (it keeps trying after that). */
    start(timeoutMs) {
      return new Promise(resolve => {
        this._ready = resolve;
        this._open();
        setTimeout(resolve, timeoutMs);
      });
    }

    _open() {
      if (this._closed) return;
      const since = this.lastEventId > 0 ? (this.url.includes('?') ? '&' : '?') + 'since=' + this.lastEventId : '';
      const source = new EventSource(this.url + since);
      this._source = source;
      const deliver = event => this._deliver(event);
      for (const type of EVENT_TYPES) if (type !== 'error') source.addEventListener(type, deliver);
      // The daemon's `error` events and EventSource's own connection errors share the name `error`;
      // only the daemon's carry data.
      source.addEventListener('error', event => {
        if (typeof event.data === 'string') { deliver(event); return; }
        if (source.readyState === EventSource.CLOSED && !this._closed) this._retry(source);
      });
      source.addEventListener('open', () => {
        this._failures = 0;
        if (this._ready) { this._ready(); this._ready = null; }
        if (this._onOpen) this._onOpen();
        if (this._opened && this._onReopen) this._onReopen();
        this._opened = true;
      });
    }

    _retry(source) {
      source.close();
      if (this._beforeRetry) this._beforeRetry();
      const wait = Math.min(30000, 500 * Math.pow(2, this._failures));
      this._failures += 1;
      this._timer = setTimeout(() => { this._timer = null; this._open(); }, wait);
    }

    _deliver(event) {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      // The gap frame has no id of its own (lastEventId still holds the previous one) and carries its
      // fields bare: pass it on with the shape of the others.
      if (event.type === 'eventsDropped') { this._onMessage({ type: 'eventsDropped', data: message }); return; }
      const id = Number(event.lastEventId);
      if (id && id <= this.lastEventId) return;
      if (id) this.lastEventId = id;
      this._onMessage(message);
    }

    /** pagehide: let the connection go, keep the place. */
    _suspend() {
      if (this._timer) { clearTimeout(this._timer); this._timer = null; }
      if (this._source) this._source.close();
      this._source = null;
    }

    /** pageshow: reopen after the last event seen (what was missed is replayed). */
    _resume() {
      if (!this._closed && !this._source && !this._timer) { this._opened = true; this._open(); }
    }

    close() {
      this._closed = true;
      lifecycle.delete(this);
      if (this._timer) clearTimeout(this._timer);
      if (this._source) this._source.close();
    }
  }

  /** The relays of this page, one per daemon address. */
  const relays = new Map();
  let relayMembers = 0;

  /**
   * ONE event stream for every session this page follows, and for every tab of this site that follows
   * sessions of the same daemon: browsers open at most six HTTP/1.1 connections per site, and a stream per
   * session (or per tab) stalls the seventh and every request after it. The tabs elect one holder with a Web
   * Lock; it opens `GET /api/v1/events?token=…&token=…` with every tab's tokens and passes each event on
   * over a BroadcastChannel. When the holder goes (closed, reloaded, hidden), another tab gets the lock and
   * reopens the stream after the last event id every tab saw. Without Web Locks or BroadcastChannel, each
   * tab holds its own one stream.
   */
  class EventRelay {
    static of(daemon) {
      let relay = relays.get(daemon.url);
      if (!relay) { relay = new EventRelay(daemon); relays.set(daemon.url, relay); }
      return relay;
    }

    constructor(daemon) {
      this._daemon = daemon;
      this.tab = Math.random().toString(36).slice(2) + Date.now().toString(36);
      this.members = new Map();  // key -> {sessionId, token, receive, reopened, lastId, resolve}
      this.remote = new Map();   // (the holder's) tab -> [{id, token}]
      this.lastEventId = 0;
      this.leader = false;
      this.stream = null;
      this._streamKey = '';
      this._pending = null;
      this._suspended = false;
      this._channel = null;
      this._abort = null;
      this._release = null;
      lifecycle.add(this);
      this._join();
    }

    /** Follows `sessionId` with `token`; resolves once the stream carries it (at most 5 s). */
    add(sessionId, token, receive, reopened) {
      const key = ++relayMembers;
      const member = { sessionId, token, receive, reopened, lastId: 0, resolve: null };
      const ready = new Promise(resolve => { member.resolve = resolve; setTimeout(resolve, 5000); });
      this.members.set(key, member);
      this._changed();
      return { key, ready };
    }

    remove(key) {
      if (this.members.delete(key)) this._changed();
    }

    _changed() {
      if (this.leader) this._reopenIfChanged(); else this._announce();
    }

    // Taking part: the channel and the lock.

    _join() {
      const locks = global.navigator && global.navigator.locks;
      if (typeof BroadcastChannel !== 'function' || !locks || typeof locks.request !== 'function') { this._lead(); return; }
      this._channel = new BroadcastChannel('vmsession.js events ' + this._daemon.url);
      this._channel.onmessage = event => this._message(event.data || {});
      this._abort = typeof AbortController === 'function' ? new AbortController() : null;
      const options = this._abort ? { signal: this._abort.signal } : {};
      locks.request('vmsession.js events ' + this._daemon.url, options, () => new Promise(release => {
        if (this._suspended) { release(); return; }
        this._release = release;
        this._lead();
      })).catch(() => { /* aborted on pagehide */ });
      this._announce();
    }

    _post(message) { if (this._channel) this._channel.postMessage(message); }

    _lead() {
      this.leader = true;
      this.remote.clear();
      this._post({ t: 'hello' });  // every other tab says which sessions it follows
      this._reopen(100);
    }

    _announce() {
      if (this.leader || !this._channel) return;
      this._post({ t: 'members', tab: this.tab, members: this._own(), lastEventId: this.lastEventId });
    }

    _own() {
      return Array.from(this.members.values(), m => ({ id: m.sessionId, token: m.token }));
    }

    _message(data) {
      switch (data.t) {
        case 'hello': this._announce(); break;
        case 'members':
          if (!this.leader) break;
          this.remote.set(data.tab, data.members || []);
          this.lastEventId = Math.max(this.lastEventId, data.lastEventId || 0);
          this._reopenIfChanged();
          break;
        case 'bye': if (this.leader && this.remote.delete(data.tab)) this._reopenIfChanged(); break;
        case 'event': this._deliver(data.message); break;
        case 'open': this._ready(data.ids || []); break;
        case 'reopened': this._reopened(); break;
        default: break;
      }
    }

    // The holder's stream.

    _all() {
      const tokens = new Map();  // token -> session id
      for (const m of this._own()) tokens.set(m.token, m.id);
      for (const list of this.remote.values()) for (const m of list) tokens.set(m.token, m.id);
      return tokens;
    }

    _reopenIfChanged() {
      const key = Array.from(this._all().keys()).sort().join(' ');
      // A short wait gathers the changes of many tabs (reloaded together) into one reopening.
      if (key !== this._streamKey || (!this.stream && key)) this._reopen(150);
    }

    _reopen(wait) {
      if (!this.leader || this._suspended || this._pending) return;
      this._pending = setTimeout(() => { this._pending = null; this._open(); }, wait);
    }

    _open() {
      if (this.stream) {
        this.lastEventId = Math.max(this.lastEventId, this.stream.lastEventId);
        this.stream.close();
        this.stream = null;
      }
      const all = this._all();
      this._streamKey = Array.from(all.keys()).sort().join(' ');
      if (!all.size) return;
      const ids = Array.from(new Set(all.values()));
      const query = Array.from(all.keys(), token => 'token=' + encodeURIComponent(token)).join('&');
      const stream = new ReplayingStream(this._daemon.url + API + '/events?' + query,
        message => { this._deliver(message); this._post({ t: 'event', message }); },
        () => { this._reopened(); this._post({ t: 'reopened' }); },
        { since: this.lastEventId, onOpen: () => { this._ready(ids); this._post({ t: 'open', ids }); },
          beforeRetry: () => this._dropInvalid(all) });
      this.stream = stream;
      stream.start(5000);
    }

    /**
     * The stream was refused: one of its tokens may be revoked, or its session deleted (any of them refuses
     * the whole stream). Asks the daemon about each session and drops those it no longer grants.
     */
    async _dropInvalid(all) {
      const gone = new Set();
      await Promise.all(Array.from(all, async ([token, id]) => {
        try {
          const response = await fetch(this._daemon.url + API + '/sessions/' + id,
            toDaemon({ headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' }));
          if ([401, 403, 404].includes(response.status)) gone.add(token);
        } catch (ignored) { /* the daemon is away: nothing to drop */ }
      }));
      if (!gone.size) return;
      for (const [key, m] of Array.from(this.members)) if (gone.has(m.token)) this.members.delete(key);
      for (const [tab, list] of this.remote) this.remote.set(tab, list.filter(m => !gone.has(m.token)));
      this._reopenIfChanged();
    }

    // Every tab: events to its own sessions.

    _deliver(message) {
      if (!message) return;
      if (message.eventId) this.lastEventId = Math.max(this.lastEventId, message.eventId);
      for (const m of Array.from(this.members.values())) {
        if (message.type !== 'eventsDropped' && m.sessionId !== message.sessionId) continue;
        if (message.eventId) {
          if (message.eventId <= m.lastId) continue;
          m.lastId = message.eventId;
        }
        m.receive(message);
      }
    }

    _ready(ids) {
      for (const m of this.members.values()) if (ids.includes(m.sessionId) && m.resolve) { m.resolve(); m.resolve = null; }
    }

    _reopened() { for (const m of this.members.values()) m.reopened(); }

    // pagehide / pageshow.

    _suspend() {
      this._suspended = true;
      if (this._pending) { clearTimeout(this._pending); this._pending = null; }
      if (this.stream) {
        this.lastEventId = Math.max(this.lastEventId, this.stream.lastEventId);
        this.stream.close();
        this.stream = null;
      }
      this._streamKey = '';
      this._post({ t: 'bye', tab: this.tab });
      this.leader = false;
      if (this._release) { this._release(); this._release = null; }
      if (this._abort) this._abort.abort();
      if (this._channel) { this._channel.close(); this._channel = null; }
    }

    _resume() {
      if (!this._suspended) return;
      this._suspended = false;
      this._join();
      for (const m of this.members.values()) m.reopened();
    }
  }

  /** A session: the plugin's session object, over the daemon's REST API and event stream. */
  class Session extends CompatibleEventTarget {
    constructor(daemon, view, token) {
      super();
      this._daemon = daemon;
      this._token = token;
      this._view = Object.assign({}, view);
      this._properties = {};
      this._relay = null;
      this._seq = new Sequence();
      this._queue = Promise.resolve();
    }

    get id() { return this._view.id; }
    get name() { return this._view.name; }
    /** The plugin's state number (appendix D). */
    get state() { return this._view.stateCode; }
    /** The daemon's state name: closed, opening, open, starting, running, error, paused, saved, ... */
    get stateName() { return this._view.state; }
    get cpus() { return this._view.cpus ?? null; }
    get memory() { return this._view.memory ?? null; }
    /** The plugin's name for `memory` (MiB). */
    get ram() { return this.memory; }
    get disk() { return this._view.disk ?? null; }
    get version() { return this._view.version ?? null; }
    get executionCap() { return this._view.executionCap; }
    get apiURL() { return this._view.apiURL ?? null; }
    get ip() { return this._view.ip ?? null; }
    get daemonControlled() { return this._view.daemonControlled; }
    get daemonMinCap() { return this._view.daemonMinCap; }
    get daemonMaxCap() { return this._view.daemonMaxCap; }
    get daemonFlags() { return this._view.daemonFlags; }
    /** The last failure's message, if the session is in error. */
    get lastError() { return this._view.lastError ?? null; }
    /** The id of the operation in progress, if any. */
    get operation() { return this._view.operation ?? null; }

    /** The session as the daemon last described it. */
    toJSON() { return Object.assign({}, this._view); }

    /** Creates the disk and defines the VM: {cpus, memory (or ram), disk, version}, each optional. */
    open(requirements) {
      const r = requirements || {};
      const body = {};
      for (const key of ['cpus', 'disk', 'version']) if (r[key] !== undefined) body[key] = r[key];
      const memory = r.memory !== undefined ? r.memory : r.ram;
      if (memory !== undefined) body.memory = memory;
      return this._act('open', body);
    }

    /**
     * Boots the VM with contextualization `userData` (cloud-init user-data), or restores it if hibernated.
     * `params`: further fields of the start request, passed as they are (the daemon refuses unknown ones).
     */
    start(userData, params) {
      const body = Object.assign({}, params || {});
      if (userData !== undefined && userData !== null) body.userData = String(userData);
      return this._act('start', body);
    }

    pause() { return this._act('pause'); }
    resume() { return this._act('resume'); }
    stop() { return this._act('stop'); }
    hibernate() { return this._act('hibernate'); }
    reset() { return this._act('reset'); }
    /** Powers the VM off and removes it with its disks (and its snapshots); open() again to use the session. */
    close() { return this._act('close'); }

    // snapshots

    /**
     * Takes snapshot `name` (letters, digits, '.', '_', '-') of the running or paused VM, memory and disk;
     * resolves with the finished operation. The VM stays as it was.
     */
    snapshot(name) { return this._act('snapshots', { name: String(name) }); }

    /** The session's snapshots, oldest first: [{name, created, state ('running' or 'paused'), bytes}]. */
    async snapshots() { return (await this._call('GET', '/snapshots')).snapshots; }

    /** Brings the VM back to snapshot `name`, running or paused as it was then; resolves with the finished operation. */
    revert(name) { return this._act('snapshots/' + encodeURIComponent(name) + '/revert'); }

    /** Deletes snapshot `name`; the VM stays as it is. */
    async deleteSnapshot(name) {
      await this._call('DELETE', '/snapshots/' + encodeURIComponent(name));
      return 0;
    }

    /** 1 to 100 % of a core per vCPU; resolves with the new cap. */
    async setExecutionCap(cap) {
      const ticket = this._seq.take();
      const view = await this._call('PUT', '/execution-cap', { cap: Number(cap) });
      this._update(view, ticket);
      return this.executionCap;
    }

    /** A guest property's value, or null if it is not set. */
    async getProperty(name) {
      try {
        const reply = await this._call('GET', '/properties/' + encodeURIComponent(name));
        this._properties[name] = reply.value;
        return reply.value;
      } catch (error) {
        if (error.code === 'not_found') return null;
        throw error;
      }
    }

    async setProperty(name, value) {
      await this._call('PUT', '/properties/' + encodeURIComponent(name), { value: String(value) });
      this._properties[name] = String(value);
      return 0;
    }

    /** Reads the session again from the daemon. */
    async refresh() {
      const ticket = this._seq.take();
      this._update(await this._call('GET', ''), ticket);
      return this;
    }

    // display

    /**
     * The daemon's page showing this session's screen (absolute URL), while the VM runs or is paused;
     * null otherwise. The plugin's `rdpURL` corresponds to it.
     */
    get displayURL() { return this._view.displayURL ? new URL(this._view.displayURL, this._daemon.url + '/').href : null; }

    /**
     * Shows the VM's screen in `element` with noVNC (Debian's, served by the daemon at /lib/novnc/).
     * {readOnly: true}: a viewer whose keys and pointer the daemon itself drops. Several viewers may watch
     * at once. Resolves with noVNC's RFB object once connected (rfb.disconnect() closes it); rejects with a
     * VMSession.Error if the display cannot be opened (no running VM, wrong token, origin not approved).
     */
    async display(element, options) {
      const readOnly = !!(options && options.readOnly);
      let RFB;
      try {
        ({ default: RFB } = await import(this._daemon.url + '/lib/novnc/core/rfb.js'));
      } catch (cause) {
        throw (await localNetworkRefusal()) || new VMSessionError('unavailable',
          'noVNC could not be loaded from the daemon (' + (cause && cause.message) + '; Debian package novnc).');
      }
      const url = this._daemon.url.replace(/^http/, 'ws') + API + '/sessions/' + this.id + '/display?token=' +
        encodeURIComponent(this._token) + (readOnly ? '&mode=read' : '');
      const rfb = new RFB(element, url, { shared: true });
      rfb.viewOnly = readOnly;
      rfb.scaleViewport = true;
      return new Promise((resolve, reject) => {
        const refused = async () => {
          // The browser hides why a WebSocket was refused; the same URL without the upgrade says it.
          try { await this._call('GET', '/display' + (readOnly ? '?mode=read' : '')); } catch (error) {
            if (error.code !== 'invalid_usage') return reject(error);
          }
          reject((await localNetworkRefusal()) || new VMSessionError('unavailable', 'The display connection closed before it was ready.'));
        };
        // pagehide closes the display (noVNC cannot resume a connection): call display() again on pageshow.
        const held = { _suspend: () => { try { rfb.disconnect(); } catch (ignored) { /* already closed */ } }, _resume() {} };
        rfb.addEventListener('connect', () => {
          rfb.removeEventListener('disconnect', refused);
          lifecycle.add(held);
          rfb.addEventListener('disconnect', () => lifecycle.delete(held), { once: true });
          resolve(rfb);
        }, { once: true });
        rfb.addEventListener('disconnect', refused, { once: true });
      });
    }

    /** A PNG of the VM's screen, as a Blob; rejects with a VMSession.Error (invalid_state if it does not run). */
    async screenshot() {
      const response = await this._daemon._fetch(this._daemon.url + API + '/sessions/' + this.id + '/screenshot',
        { headers: { Authorization: 'Bearer ' + this._token }, cache: 'no-store' });
      if (!response.ok) {
        let json = null;
        try { json = await response.json(); } catch (ignored) { /* not JSON: said below */ }
        throw VMSessionError.from(json && json.error, response.status);
      }
      try { return await response.blob(); } catch (cause) {
        throw new VMSessionError('unavailable', 'The screenshot was cut off (' + (cause && cause.message) + ').', undefined, response.status);
      }
    }

    // console

    /**
     * Shows the VM's serial console in `element` with xterm.js (Debian's, served by the daemon at
     * /lib/xterm/): first what the guest printed before (the daemon's history), then live output; typing
     * reaches the guest. {readOnly: true}: a viewer that only watches (the daemon refuses its input too).
     * Several tabs may show one console at once, writers and viewers alike. The console stays open across
     * pause, stop/start and hibernate/restore, and reconnects by itself when the daemon restarts. Resolves
     * with a VMSession.Console once the first connection is up; rejects with a VMSession.Error if it cannot
     * be opened (wrong token, origin not approved, a session that never started).
     */
    async console(element, options) {
      const Terminal = await this._daemon._xterm();
      const view = new SessionConsole(this, element, Terminal, options || {});
      await view._connect(true);
      return view;
    }

    /** Stops following the session's events (the session itself goes on). */
    disconnect() {
      if (this._relay) this._relay.relay.remove(this._relay.key);
      this._relay = null;
    }

    // Internals.

    _call(method, path, body) {
      return this._daemon._request(method, API + '/sessions/' + this.id + path, { token: this._token, body });
    }

    /**
     * Applies what the daemon said. With a `ticket` (a reply), only if nothing newer was applied since the
     * request was sent; without (an event, the page's own change), always, and replies in flight lose.
     */
    _update(view, ticket) {
      if (!view || typeof view !== 'object') return;
      if (ticket !== undefined) { if (!this._seq.accept(ticket)) return; } else this._seq.supersede();
      Object.assign(this._view, view);
    }

    /** Hooks for the plugin-compatible session: the daemon reported these fields, or a property. */
    _daemonSaid(fields) { }
    _propertyChanged(name) { }

    /**
     * Starts an action and waits for its operation to end; rejects if it fails. An operation's failure is
     * marked `.fromOperation` (its `<action>Error` event comes from the event stream).
     */
    async _act(action, body) {
      const ticket = this._seq.take();
      const reply = await this._call('POST', '/' + action, body);
      this._update(reply.session, ticket);
      let operation = reply.operation;
      while (operation.status === 'running') {
        operation = await this._daemon._request('GET', API + '/operations/' + operation.id + '/wait?timeout=60',
          { token: this._token });
      }
      try { await this.refresh(); } catch (ignored) { /* the operation's outcome is what the caller asked for */ }
      if (operation.status === 'failed') {
        const error = VMSessionError.from(operation.error, 0);
        error.fromOperation = true;
        throw error;
      }
      return operation;
    }

    /** Follows the session's events on the page's one stream; resolves once it carries them (at most 5 s). */
    _follow() {
      const relay = EventRelay.of(this._daemon);
      const { key, ready } = relay.add(this.id, this._token, message => this._receive(message), () => this.refresh().catch(() => {}));
      this._relay = { relay, key };
      return ready;
    }

    /** Events are handled one after the other, in id order, even when one needs a refresh. */
    _receive(message) {
      this._queue = this._queue.then(() => this._handle(message)).catch(error => {
        if (global.console) global.console.error('vmsession.js: a listener failed', error);
      });
    }

    async _handle(message) {
      const data = message.data || {};
      switch (message.type) {
        case 'stateChanged':
          this._update({ state: data.state, stateCode: data.stateCode });
          // The guest's address means nothing once the VM neither runs nor is paused (hibernated, stopped, closed).
          if (data.state !== 'running' && data.state !== 'paused') this._update({ apiURL: null, ip: null });
          break;
        case 'executionCapChanged': this._update({ executionCap: data.cap }); this._daemonSaid(['executionCap']); break;
        case 'propertyChanged': this._properties[data.name] = data.value; this._propertyChanged(data.name); break;
        case 'daemonControlChanged':
          this._update({ daemonControlled: data.controlled, daemonMinCap: data.minCap, daemonMaxCap: data.maxCap, daemonFlags: data.flags });
          this._daemonSaid(['daemonControlled', 'daemonMinCap', 'daemonMaxCap', 'daemonFlags']);
          break;
        case 'apiAvailable': this._update({ ip: data.ip, apiURL: data.apiURL }); break;
        case 'apiUnavailable': this._update({ apiURL: null }); break;
        case 'operationCompleted':
        case 'operationFailed':
          try { await this.refresh(); } catch (ignored) { /* the event still goes out */ }
          break;
        default: break;
      }
      this.dispatchEvent(makeEvent(message.type, data, message));
      if (message.type === 'operationCompleted' && ACTIONS.includes(data.action)) {
        this.dispatchEvent(makeEvent(data.action, data, message));
      } else if (message.type === 'operationFailed' && ACTIONS.includes(data.action)) {
        const error = Object.assign({ action: data.action, operation: data.operation }, data.error || {});
        this.dispatchEvent(makeEvent(data.action + 'Error', error, message));
      }
    }
  }

  // guest: the guest's own HTTP API (its port 80), reached through the daemon with the session's token.

  /**
   * A session's serial console on the page: .terminal (xterm.js's Terminal), .readOnly, send(text) to type,
   * close() to leave. Events: 'notice' (detail.message: what the daemon tells the typist, e.g. that the VM
   * is not running), 'closed' (detail.code and detail.reason: the daemon ended it for good, e.g. a read-only
   * viewer that typed, a flood of input, a revoked token, a closed session).
   */
  class SessionConsole extends EventTarget {
    constructor(session, element, Terminal, options) {
      super();
      this.session = session;
      this.readOnly = !!options.readOnly;
      this.terminal = new Terminal({ disableStdin: this.readOnly, scrollback: 5000, convertEol: false });
      this.terminal.open(element);
      if (typeof this.terminal.fit === 'function') { try { this.terminal.fit(); } catch (ignored) { /* not laid out yet */ } }
      this.terminal.on('data', data => this.send(data));
      this._socket = null;
      this._closed = false;
      this._hidden = false;
      this._retry = 1000;
      lifecycle.add(this);
    }

    /** pagehide: the socket goes (the page may be kept in the back/forward cache). */
    _suspend() {
      this._hidden = true;
      if (this._socket) this._socket.close(1000, 'the page was hidden');
      this._socket = null;
    }

    /** pageshow: back, with the history replayed from a clean screen. */
    _resume() {
      if (!this._hidden) return;
      this._hidden = false;
      if (!this._closed) this._connect(false).catch(() => {});
    }

    /** Types `text` into the console (a writer's only; a read-only console ignores it). */
    send(text) {
      if (this.readOnly || !this._socket || this._socket.readyState !== WebSocket.OPEN) return false;
      this._socket.send(text);
      return true;
    }

    /** What the terminal holds (scrollback and screen), one line per line, trailing blanks trimmed. */
    text() {
      const t = this.terminal;
      const lines = [];
      if (t.buffer && t.buffer.active) {  // xterm.js 4 and later
        const b = t.buffer.active;
        for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
      } else if (t._core && t._core.buffer) {  // xterm.js 3 (Debian 12)
        const b = t._core.buffer;
        for (let i = 0; i < b.lines.length; i++) lines.push(b.translateBufferLineToString(i, true));
      }
      return lines.join('\n').replace(/\s+$/, '');
    }

    /** Leaves the console (the guest goes on). */
    close() {
      this._closed = true;
      lifecycle.delete(this);
      if (this._socket) this._socket.close(1000, 'the page closed the console');
      this._socket = null;
    }

    _url() {
      const s = this.session;
      return s._daemon.url.replace(/^http/, 'ws') + API + '/sessions/' + s.id + '/console?token=' +
        encodeURIComponent(s._token) + (this.readOnly ? '&mode=read' : '');
    }

    /** Opens the WebSocket; the first time, resolves once it is up or rejects with why it was refused. */
    _connect(first) {
      return new Promise((resolve, reject) => {
        const socket = new WebSocket(this._url());
        socket.binaryType = 'arraybuffer';
        this._socket = socket;
        const decoder = new TextDecoder('utf-8');
        let opened = false;
        socket.onopen = () => { opened = true; this._retry = 1000; resolve(this); };
        socket.onmessage = message => {
          if (typeof message.data === 'string') {
            let control = null;
            try { control = JSON.parse(message.data); } catch (ignored) { return; }
            // A reconnection replays the history: start from a clean screen, so nothing shows twice.
            if (control.type === 'hello') this.terminal.reset();
            if (control.type === 'notice') {
              this.terminal.write('\r\n\x1b[33m[vmsessiond] ' + control.message + '\x1b[0m\r\n');
              this.dispatchEvent(new CustomEvent('notice', { detail: control }));
            }
            return;
          }
          this.terminal.write(decoder.decode(new Uint8Array(message.data), { stream: true }));
        };
        socket.onclose = async event => {
          if (this._socket === socket) this._socket = null;
          if (!opened && first) {
            // The browser hides why a WebSocket was refused; the same URL without the upgrade says it.
            try {
              await this.session._call('GET', '/console' + (this.readOnly ? '?mode=read' : ''));
            } catch (error) {
              if (error.code !== 'invalid_usage') return reject(error);
            }
            return reject((await localNetworkRefusal()) ||
              new VMSessionError('unavailable', 'The console connection closed before it was ready.'));
          }
          if (this._closed || this._hidden) return;
          // 1001 with a closed session, and 1008 (read-only input, flooding, a revoked token) are final;
          // a daemon that went away (1006, or 1001 shutting down) is reconnected to, with a back-off.
          const final = event.code === 1008 || event.code === 1011 || (event.code === 1001 && /closed/.test(event.reason));
          if (final) {
            this._closed = true;
            this.terminal.write('\r\n\x1b[31m[vmsessiond] ' + (event.reason || 'the console closed') + '\x1b[0m\r\n');
            this.dispatchEvent(new CustomEvent('closed', { detail: { code: event.code, reason: event.reason } }));
            return;
          }
          await delay(this._retry);
          this._retry = Math.min(this._retry * 2, 10000);
          if (!this._closed) this._connect(false).catch(() => {});
        };
      });
    }
  }

  /**
   * session.guest: the guest's API through the daemon's proxy (`…/sessions/{id}/guest/{path}`), behind the
   * same guards as the rest (this page's approved origin, the session's token). The guest's raw port is
   * not reachable from a page.
   */
  class GuestAPI {
    constructor(session) { this._session = session; }

    /** The proxied base URL (the same as session.apiURL while the VM runs). */
    get url() { return this._session._daemon.url + API + '/sessions/' + this._session.id + '/guest'; }

    /**
     * fetch(path, init) with the session's token added; resolves to the guest's Response (any status, as
     * fetch does). The daemon's own refusals are JSON errors: 409 the VM does not run, 503 its API does not
     * answer yet, 502 the guest broke the connection, 504 it was too slow, 413 the body is too large,
     * 429 too many requests in flight. Rejects with a VMSession.Error when the browser cannot reach the
     * daemon (local_network_denied, origin_not_approved, not_running, …).
     */
    fetch(path, init) {
      const text = path === undefined || path === null ? '/' : String(path);
      const options = Object.assign({ cache: 'no-store' }, init || {});
      const headers = new Headers(options.headers || {});
      headers.set('Authorization', 'Bearer ' + this._session._token);
      options.headers = headers;
      return this._session._daemon._fetch(this.url + (text.startsWith('/') ? text : '/' + text), options);
    }
  }

  Object.defineProperty(Session.prototype, 'guest', {
    get() {
      if (!this._guest) this._guest = new GuestAPI(this);
      return this._guest;
    },
  });


  /** The states each action may start from (the daemon's state table, SessionTransition in its Core). */
  const ALLOWED_FROM = Object.freeze({
    open: ['closed', 'error'], start: ['open', 'saved', 'error'], pause: ['running'], resume: ['paused'],
    reset: ['running'], stop: ['running', 'paused'], hibernate: ['running', 'paused'],
    close: ['open', 'running', 'paused', 'saved', 'error'],
  });

  /** The state a long action puts the session in at once (the daemon does the same when it accepts it). */
  const TRANSIENT = Object.freeze({ open: 'opening', start: 'starting', stop: 'stopping', hibernate: 'saving', close: 'closing' });

  /** The plugin's return values (appendix A). */
  const HVE_SCHEDULED = 1, HVE_OK = 0, HVE_INVALID_STATE = -8, HVE_USAGE_ERROR = -99;

  /**
   * A session that behaves as the plugin's did (its manual is the specification), for pages written for it.
   * `daemon.requestSession(name, key, ok, fail)` hands one to `ok`.
   *
   * - Actions return at once: 1 when scheduled, or the plugin's negative code when the state the page already
   *   holds does not allow them (-8); every failure is also an `<action>Error(message, code)` event.
   * - Every listener on a plugin event name gets the plugin's positional arguments, whatever its arity
   *   (`openError(message, code)`, `debug(message)`, `progress(done, total, message)`, …).
   * - Properties are plain fields: `executionCap`, `daemonControlled`, `daemonMinCap`, `daemonMaxCap`,
   *   `daemonFlags` may be assigned (the request is sent; reads show the written value until the daemon says
   *   otherwise); `getProperty` answers at once from a copy kept current by `propertyChanged`.
   */
  class PluginSession extends Session {
    constructor(daemon, view, token) {
      super(daemon, view, token);
      /** Values the page wrote that the daemon has not confirmed yet. */
      this._written = {};
      this._controlWrite = null;
    }

    _positional(type, listener) { return positionalArguments(String(type), {}) !== null; }

    /** Reads the guest properties once, so that getProperty can answer at once from then on. */
    async _loadProperties() {
      const reply = await this._call('GET', '/properties');
      Object.assign(this._properties, (reply && reply.properties) || {});
    }

    // Actions: 1 or a negative code, now; the outcome as events.
    open(requirements) { return this._schedule('open', () => Session.prototype.open.call(this, requirements)); }
    start(userData, params) { return this._schedule('start', () => Session.prototype.start.call(this, userData, params)); }
    pause() { return this._schedule('pause'); }
    resume() { return this._schedule('resume'); }
    stop() { return this._schedule('stop'); }
    hibernate() { return this._schedule('hibernate'); }
    reset() { return this._schedule('reset'); }
    close() { return this._schedule('close'); }

    _schedule(action, run) {
      const allowed = ALLOWED_FROM[action];
      const state = this.stateName;
      if (allowed && !allowed.includes(state)) {
        const message = "'" + action + "' is not possible while the session is " + state + ' (it is possible when it is ' +
          allowed.join(' or ') + ').';
        this._fail(action + 'Error', message, HVE_INVALID_STATE, 'invalid_state');
        return HVE_INVALID_STATE;
      }
      const before = { state: this._view.state, stateCode: this._view.stateCode };
      if (TRANSIENT[action]) this._update({ state: TRANSIENT[action], stateCode: STATES[TRANSIENT[action]] });  // replies in flight lose
      const done = run ? run() : this._act(action);
      done.catch(error => {
        // An operation that failed has its <action>Error from the event stream; a refusal has none: say it
        // here, with the state as the daemon kept it (a refused action changes nothing).
        if (!error.fromOperation) {
          if (this._view.state === TRANSIENT[action]) this._update(before);
          this._fail(action + 'Error', error.message, error.legacyCode, error.code);
        }
        this.refresh().catch(() => {});
      });
      return HVE_SCHEDULED;
    }

    /** Fires a plugin error event after the current call returned (as the plugin did). */
    _fail(type, message, legacyCode, code) {
      setTimeout(() => this.dispatchEvent(makeEvent(type, { message, legacyCode, code })), 0);
    }

    // Properties as fields.
    get executionCap() { return 'executionCap' in this._written ? this._written.executionCap : super.executionCap; }
    set executionCap(cap) { this.setExecutionCap(cap); }
    get daemonControlled() { return this._field('daemonControlled'); }
    set daemonControlled(value) { this._writeControl('daemonControlled', !!value); }
    get daemonMinCap() { return this._field('daemonMinCap'); }
    set daemonMinCap(value) { this._writeControl('daemonMinCap', Number(value)); }
    get daemonMaxCap() { return this._field('daemonMaxCap'); }
    set daemonMaxCap(value) { this._writeControl('daemonMaxCap', Number(value)); }
    get daemonFlags() { return this._field('daemonFlags'); }
    set daemonFlags(value) { this._writeControl('daemonFlags', Number(value)); }
    /** The plugin's display address: the daemon's page for this session's screen, once a display exists. */
    get rdpURL() { return this.displayURL; }

    _field(name) { return name in this._written ? this._written[name] : this._view[name]; }

    _daemonSaid(fields) { for (const field of fields) delete this._written[field]; }

    /** 0 when sent, -99 for a cap that is not 1 to 100; a refusal is an `error` event and the old value comes back. */
    setExecutionCap(cap) {
      const value = Number(cap);
      if (!Number.isInteger(value) || value < 1 || value > 100) {
        this._fail('error', 'The execution cap must be a whole number from 1 to 100; got ' + cap + '.', HVE_USAGE_ERROR, 'invalid_argument');
        return HVE_USAGE_ERROR;
      }
      this._written.executionCap = value;
      Session.prototype.setExecutionCap.call(this, value).then(
        () => { delete this._written.executionCap; },
        error => { delete this._written.executionCap; this._fail('error', error.message, error.legacyCode, error.code); });
      return HVE_OK;
    }

    /** Assignments made in one go (the manual's three lines) are sent together, once. */
    _writeControl(field, value) {
      this._written[field] = value;
      if (this._controlWrite) return;
      this._controlWrite = Promise.resolve().then(() => {
        this._controlWrite = null;
        const names = { daemonControlled: 'controlled', daemonMinCap: 'minCap', daemonMaxCap: 'maxCap', daemonFlags: 'flags' };
        const body = {};
        for (const [name, key] of Object.entries(names)) if (name in this._written) body[key] = this._written[name];
        const ticket = this._seq.take();
        return this._call('PATCH', '/daemon', body).then(
          view => { this._update(view, ticket); this._daemonSaid(Object.keys(names)); },
          error => { this._daemonSaid(Object.keys(names)); this._fail('error', error.message, error.legacyCode, error.code); });
      });
    }

    /** The property's value as this page knows it ('' when it was never set). */
    getProperty(name) {
      const value = this._properties[name];
      return value === undefined || value === null ? '' : value;
    }

    /** 0: the value is kept at once and sent; a refusal is an `error` event and the old value comes back. */
    setProperty(name, value) {
      const before = this._properties[name];
      this._properties[name] = String(value);
      this._call('PUT', '/properties/' + encodeURIComponent(name), { value: String(value) }).catch(error => {
        if (this._properties[name] === String(value)) this._properties[name] = before;
        this._fail('error', error.message, error.legacyCode, error.code);
      });
      return HVE_OK;
    }
  }

  /**
   * The plugin's daemon object (`o.requestDaemonAccess()`): the idle-aware controller as an approved page
   * sees it, kept current by asking the daemon every few seconds. For an origin the user approved as
   * privileged (`vmsessionctl origins approve --privileged ORIGIN`) it also has a writable `idleTime`,
   * `path`, `start()` and `stop()`.
   */
  class DaemonAccess {
    constructor(daemon, status) {
      this._daemon = daemon;
      this._status = status;
      this._written = {};
      const privileged = !!status.privileged;
      Object.defineProperties(this, {
        isRunning: { enumerable: true, get: () => this._status.isRunning },
        isSystemIdle: { enumerable: true, get: () => this._status.isSystemIdle },
        idleTime: privileged
          ? { enumerable: true, get: () => ('idleTime' in this._written ? this._written.idleTime : this._status.idleTime),
              set: value => this._change({ idleTime: Number(value) }, 'idleTime') }
          : { enumerable: true, get: () => this._status.idleTime },
        privileged: { enumerable: true, value: privileged },
      });
      if (privileged) {
        Object.defineProperties(this, {
          path: { enumerable: true, get: () => this._status.path },
          start: { value: () => this._change({ running: true }) },
          stop: { value: () => this._change({ running: false }) },
        });
      }
      this._seq = new Sequence();
      this._queue = Promise.resolve();
      this._timer = setInterval(() => this.refresh().catch(() => {}), 5000);
    }

    /**
     * One request, after the ones before it have been answered (so the daemon sees them in the page's
     * order), whose reply is applied only if no newer one was.
     */
    _send(method, body) {
      const ticket = this._seq.take();
      const run = () => this._daemon._request(method, API + '/daemon', body === undefined ? {} : { body });
      const reply = this._queue.then(run, run);
      this._queue = reply.catch(() => {});
      return reply.then(status => {
        if (this._seq.accept(ticket)) this._status = status;
        return this._status;
      });
    }

    /** Reads the controller's status again. */
    async refresh() {
      await this._send('GET');
      return this;
    }

    /** Stops following the daemon. */
    close() { clearInterval(this._timer); }

    _change(body, field) {
      if (field) this._written[field] = body[field];
      this._send('PUT', body).catch(
        error => { if (global.console) global.console.warn('vmsession.js: the daemon refused', body, error); })
        .then(() => { if (field && this._written[field] === body[field]) delete this._written[field]; });
      return HVE_SCHEDULED;
    }
  }

  /**
   * The admin's view, with the admin token from <stateDir>/admin-token: every session, the web origins, the
   * templates, and one daemon-wide event stream that keeps every Session it handed out current. It fires each
   * daemon event on itself too (with .sessionId), and `reconnected` after the stream was reopened.
   */
  class Admin extends EventTarget {
    constructor(daemon, token) {
      super();
      this._daemon = daemon;
      this._token = token;
      this._sessions = new Map();
      this._stream = null;
    }

    _request(method, path, body) {
      return this._daemon._request(method, API + path, { token: this._token, body });
    }

    /** Every session, as Session objects acting with the admin token. */
    async sessions() {
      const tickets = new Map(Array.from(this._sessions, ([id, session]) => [id, session._seq.take()]));
      const reply = await this._request('GET', '/sessions');
      const seen = new Set();
      const sessions = reply.sessions.map(view => {
        seen.add(view.id);
        let session = this._sessions.get(view.id);
        if (session) session._update(view, tickets.has(view.id) ? tickets.get(view.id) : session._seq.take());
        else { session = new Session(this._daemon, view, this._token); this._sessions.set(view.id, session); }
        return session;
      });
      for (const id of Array.from(this._sessions.keys())) if (!seen.has(id)) this._sessions.delete(id);
      return sessions;
    }

    /** The web origins that asked, with the user's decision: [{origin, status, requests, firstSeen, lastSeen}]. */
    async origins() { return (await this._request('GET', '/origins')).origins; }
    approve(origin) { return this._request('POST', '/origins/approve', { origin }); }
    deny(origin) { return this._request('POST', '/origins/deny', { origin }); }
    async forget(origin) { await this._request('POST', '/origins/forget', { origin }); }

    // templates

    /**
     * The templates and the warm-ups from images since the daemon started, newest first: {templates: [{name,
     * created, fromSession, baseVersion, cpus, memory, disk, bytes, sessions (ids)}], warmUps: [{name, image,
     * sessionId, status ('running', 'succeeded' or 'failed'), progress: {done, total, message}, error, createdAt,
     * updatedAt}]}.
     */
    templates() { return this._request('GET', '/templates'); }

    /**
     * Makes template `name` from `source`: {fromSession: id} (a running session started with user-data; it runs
     * on), or {fromImage, userData, parameters?, cpus?, memory?, disk?, readyTimeout?} (a warm-up: the daemon boots
     * the image with the user-data, which prints VMSESSION-TEMPLATE-READY on the console when the guest is
     * ready). Resolves when the template is made, with the finished operation (from a session) or warm-up (from
     * an image); rejects with why not: the daemon's refusal, or how the operation or warm-up failed.
     * `onProgress(warmUp)` is called with a warm-up's progress about every second while it runs.
     */
    async makeTemplate(name, source, onProgress) {
      const reply = await this._request('POST', '/templates', Object.assign({}, source, { name: String(name) }));
      if (reply.operation) {
        let operation = reply.operation;
        while (operation.status === 'running') {
          operation = await this._daemon._request('GET', API + '/operations/' + operation.id + '/wait?timeout=60', { token: this._token });
        }
        if (operation.status === 'failed') throw VMSessionError.from(operation.error, 0);
        return operation;
      }
      let warmUp = reply;
      while (warmUp.status === 'running') {
        if (typeof onProgress === 'function') onProgress(warmUp);
        await delay(1000);
        warmUp = await this.templateWarmUp(name);
      }
      if (warmUp.status === 'failed') throw VMSessionError.from(warmUp.error, 0);
      return warmUp;
    }

    /** Template `name`'s last warm-up from an image: under way (its progress) or how it ended. */
    templateWarmUp(name) { return this._request('GET', '/templates/' + encodeURIComponent(name) + '/warm-up'); }

    /** Deletes template `name` and its files; refused (code invalid_state, naming them) while sessions use it. */
    async deleteTemplate(name) { await this._request('DELETE', '/templates/' + encodeURIComponent(name)); }

    /** Follows every session's events; resolves once connected (at most 5 s). */
    watch() {
      if (this._stream) return Promise.resolve();
      const url = this._daemon.url + API + '/events?token=' + encodeURIComponent(this._token);
      this._stream = new ReplayingStream(url, message => {
        const session = this._sessions.get(message.sessionId);
        if (session) session._receive(message);
        this.dispatchEvent(makeEvent(message.type, message.data || {}, message));
      }, () => this.dispatchEvent(new CustomEvent('reconnected')));
      lifecycle.add(this._stream);
      return this._stream.start(5000);
    }

    /** Stops following events. */
    disconnect() {
      if (this._stream) this._stream.close();
      this._stream = null;
    }
  }

  /** A daemon that answered: where it is and what it said about itself (.info). */
  class Daemon {
    constructor(url) {
      this.url = url;
      this.info = null;
    }

    /**
     * Asks for the session `name`, keyed by `secret` (the first requester owns the name).
     * With callbacks (the plugin's style) it returns 1 at once and calls onSuccess(session) or
     * onFailure(legacyCode); without, it returns a Promise of the Session.
     */
    requestSession(name, secret, onSuccess, onFailure) {
      if (typeof onSuccess !== 'function' && typeof onFailure !== 'function') return this._requestSession(name, secret, Session);
      if (typeof name !== 'string' || typeof secret !== 'string' || !name || !secret) {
        if (typeof onFailure === 'function') setTimeout(() => onFailure(HVE_USAGE_ERROR), 0);
        return HVE_USAGE_ERROR;
      }
      this._requestSession(name, secret, PluginSession).then(
        session => { if (typeof onSuccess === 'function') onSuccess(session); },
        error => { if (typeof onFailure === 'function') onFailure(error.legacyCode); });
      return HVE_SCHEDULED;
    }

    async _requestSession(name, secret, Kind) {
      const body = { name: String(name), secret: String(secret) };
      let grant;
      const giveUp = Date.now() + 60000;
      for (;;) {
        try {
          grant = await this._request('POST', API + '/sessions', { body });
          break;
        } catch (error) {
          // The daemon checks one secret at a time per site (many tabs reloaded together ask at once): wait as
          // told, for a minute at most. A lock-out after wrong secrets asks for longer waits: not retried.
          if (error.code !== 'too_many_attempts' || Date.now() > giveUp || !(error.retryAfter <= 2)) throw error;
          await delay(error.retryAfter * 1000 + Math.random() * 250);
        }
      }
      const session = new Kind(this, grant.session, grant.token);
      if (session instanceof PluginSession) await session._loadProperties();
      await session._follow();
      return session;
    }

    /**
     * xterm.js's Terminal: the page's own if it has one, else Debian's, loaded from the daemon once
     * (a classic script and its style sheet, public like vmsession.js).
     */
    _xterm() {
      if (global.Terminal) return Promise.resolve(global.Terminal);
      if (!this._xtermLoading) {
        this._xtermLoading = new Promise((resolve, reject) => {
          const style = document.createElement('link');
          style.rel = 'stylesheet';
          style.href = this.url + '/lib/xterm/xterm.css';
          document.head.append(style);
          const script = document.createElement('script');
          script.src = this.url + '/lib/xterm/xterm.js';
          script.onload = () => global.Terminal ? resolve(global.Terminal)
            : reject(new VMSessionError('unavailable', 'xterm.js loaded but defines no Terminal.'));
          script.onerror = () => { this._xtermLoading = null; reject(new VMSessionError('unavailable',
            'xterm.js could not be loaded from the daemon (Debian packages libjs-xterm / node-xterm).')); };
          document.head.append(script);
        });
      }
      return this._xtermLoading;
    }

    /** The plugin's `hypervisorName` and `hypervisorVersion`: libvirt's driver (e.g. QEMU) and its version. */
    get hypervisorName() { return this.info && this.info.hypervisor ? this.info.hypervisor.driver : undefined; }
    get hypervisorVersion() { return this.info && this.info.hypervisor ? this.info.hypervisor.version : undefined; }

    /**
     * The plugin's daemon object, or the plugin's -7 when the daemon did not say how its controller is.
     * See DaemonAccess.
     */
    requestDaemonAccess() {
      if (!this._controller) return LOCAL_LEGACY_CODES.not_running;
      if (!this._daemonAccess) this._daemonAccess = new DaemonAccess(this, this._controller);
      return this._daemonAccess;
    }

    /** The admin's view of the daemon (the token is in <stateDir>/admin-token). */
    admin(token) { return new Admin(this, token); }

    /** One JSON request; rejects with a VMSessionError. */
    async _request(method, path, options) {
      const opts = options || {};
      const headers = {};
      const init = { method, headers, cache: 'no-store' };
      if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
      if (opts.body !== undefined) {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(opts.body);
      }
      const response = await this._fetch(this.url + path, init);
      let text;
      try { text = await response.text(); } catch (cause) {
        throw new VMSessionError('unavailable', 'The daemon\'s answer was cut off (' + (cause && cause.message) + ').', undefined, response.status);
      }
      let json = null;
      if (text) {
        try { json = JSON.parse(text); } catch (e) {
          throw new VMSessionError('invalid_response', 'vmsessiond answered ' + response.status + ' with something that is not JSON.',
            undefined, response.status);
        }
      }
      if (!response.ok) throw VMSessionError.from(json && json.error, response.status);
      return json;
    }

    /** fetch() to the daemon; a failure rejects with a VMSession.Error that says why, never a TypeError. */
    async _fetch(url, init) {
      try {
        return await fetch(url, toDaemon(init));
      } catch (cause) {
        throw await this._whyUnreadable(cause);
      }
    }

    /**
     * A fetch the browser failed: Local Network Access refused, a refused origin (the daemon answers a
     * no-cors probe), or no daemon.
     */
    async _whyUnreadable(cause) {
      const refusal = await localNetworkRefusal();
      if (refusal) return refusal;
      const origin = global.location ? global.location.origin : 'this page\'s origin';
      try {
        await fetch(this.url + '/vmsession.js', toDaemon({ mode: 'no-cors', cache: 'no-store' }));
      } catch (probeFailed) {
        return new VMSessionError('not_running',
          'vmsessiond does not answer at ' + this.url + ' (' + (cause && cause.message) + '). Is it running? ' +
          '(A daemon that refuses this page\'s origin looks the same to a page, since the browser hides its answer.)');
      }
      return new VMSessionError('origin_not_approved',
        'vmsessiond at ' + this.url + ' does not accept requests from ' + origin + ' (yet). The user can allow it with ' +
        '`vmsessionctl origins approve ' + origin + '`. (The browser hides the daemon\'s refusal from the page, ' +
        'so this is inferred: the daemon answers, but not to this origin.)');
    }
  }

  /**
   * Connects to the daemon at `url` (default http://127.0.0.1:7011) and checks that it answers this page.
   * Rejects with a VMSession.Error whose .code is local_network_prompt, local_network_denied,
   * insecure_context, not_running or origin_not_approved (see the top of this file).
   * {prompt: true}: send the request even without a user gesture when the browser would ask (by default a
   * page on a public site that has not been allowed yet gets local_network_prompt without any prompt).
   */
  async function connect(url, options) {
    const base = String(url || 'http://127.0.0.1:7011').replace(/\/+$/, '');
    const opts = options || {};
    const daemon = new Daemon(base);
    // No prompt the user did not ask for: outside a gesture, say that the browser would ask, and send nothing.
    if (!opts.prompt && !pageIsLoopback() && global.isSecureContext && !userIsActive() &&
        (await localNetworkPermission()) === 'prompt') {
      const refusal = await localNetworkRefusal();
      if (refusal) throw refusal;
    }
    daemon.info = await daemon._request('GET', API);
    // The controller's status, for requestDaemonAccess() to answer at once (as the plugin's did).
    try { daemon._controller = await daemon._request('GET', API + '/daemon'); } catch (ignored) { daemon._controller = null; }
    return daemon;
  }

  const VMSession = Object.freeze({
    version: '1.3.0', connect, localNetworkPermission, STATES, EVENT_TYPES, ACTIONS,
    Error: VMSessionError, Session, PluginSession, DaemonAccess, Admin, Daemon, Console: SessionConsole,
  });
  global.VMSession = VMSession;
  if (typeof module === 'object' && module && module.exports) module.exports = VMSession;
})(typeof globalThis !== 'undefined' ? globalThis : this);
