/*
 * vmsession.js: use a local vmsessiond from a web page. One file, no dependency, no build step;
 * the daemon serves it at /vmsession.js (load it with <script src="http://127.0.0.1:7011/vmsession.js">).
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
 * apiAvailable, apiUnavailable. The session's properties are updated before its listeners run.
 * The stream is an EventSource, which reconnects by itself and sends Last-Event-ID; when the browser
 * gives up on it (an HTTP error, the daemon restarting), it is reopened with ?since=<last event id>
 * after a back-off, so no event is lost, and none is delivered twice.
 *
 * Compatibility with the CernVM Web API plugin (its manual, appendices A-D):
 *
 *   plugin                                       vmsession.js
 *   ------------------------------------------   ------------------------------------------------------
 *   o.requestSession(name, key, ok, fail)        d.requestSession(name, key, ok, fail) returns 1 and calls
 *                                                ok(session) or fail(legacyCode), e.g. fail(-20);
 *                                                without callbacks it returns a Promise of the Session
 *   sess.open({cpus, ram, disk, version})        the same (`memory` is accepted for `ram`); a Promise
 *   sess.start(userData), pause(), resume(),     the same names; Promises instead of 1 / a negative code
 *   stop(), hibernate(), reset(), close()        (a page that ignores the return value works unchanged)
 *   sess.setExecutionCap(cap)                    the same; a Promise
 *   sess.getProperty(name) -> string             a Promise of the string (null when it is not set)
 *   sess.setProperty(name, value)                the same; a Promise
 *   sess.state, ip, cpus, ram, disk, version,    the same, read-only, kept current from the event stream;
 *   executionCap, apiURL, daemonControlled,      plus id, name, stateName ('running'), memory (= ram)
 *   daemonMinCap, daemonMaxCap, daemonFlags
 *   state codes 0-6 (appendix D)                 the same numbers; also 7 saved, 8 stopping, 9 saving,
 *                                                10 closing (VMSession.STATES)
 *   error codes (appendix A)                     error.legacyCode; error.code is the daemon's name for it
 *   events (appendix B), addEventListener:
 *     open, start, close, pause, resume,         fired on operationCompleted of that action
 *     stop, hibernate, reset  ( )
 *     openError, startError, ... (msg, code)     fired on operationFailed of that action
 *     progress (done, total, msg)                the daemon's progress event
 *     error (msg, code, category)                the daemon's error event (category = its stable code)
 *     apiAvailable (ip, apiURL), apiUnavailable  the daemon's events of those names, when it sends them;
 *                                                apiURL is the daemon's proxy for the guest's API, which
 *                                                needs the session's token: use s.guest.fetch(path, init)
 *
 *   A listener declared with two or more parameters on one of those plugin event names,
 *   e.g. s.addEventListener('progress', function (done, total, msg) {...}), is called with the plugin's
 *   positional arguments instead of an Event; any other listener gets the CustomEvent.
 *
 * Why connect() may say 'unreachable' or 'origin_not_approved': the daemon answers only pages whose
 * origin the user approved (`vmsessionctl origins approve ORIGIN`). Its refusal carries no CORS
 * headers, so the browser hides it from the page: the fetch just fails, exactly as when nothing listens.
 * connect() then asks for /vmsession.js in no-cors mode (public, never refused): if that answers, the
 * daemon is there and refused this origin ('origin_not_approved'); if not, nothing is there ('unreachable').
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
    unreachable: -7, origin_not_approved: -13, invalid_response: -7, invalid_usage: -99,
  });

  /** The daemon's event types the stream listens for (EventSource only delivers the names it is given). */
  const EVENT_TYPES = Object.freeze([
    'sessionCreated', 'stateChanged', 'progress', 'operationStarted', 'operationCompleted', 'operationFailed',
    'executionCapChanged', 'propertyChanged', 'error', 'apiAvailable', 'apiUnavailable', 'debug',
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

    addEventListener(type, listener, options) {
      if (typeof listener === 'function' && listener.length >= 2 && positionalArguments(String(type), {}) !== null) {
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
   * are dropped, so a replay that overlaps delivers nothing twice.
   */
  class ReplayingStream {
    constructor(url, onMessage, onReopen) {
      this.url = url;
      this.lastEventId = 0;
      this._onMessage = onMessage;
      this._onReopen = onReopen;
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
      const since = this.lastEventId > 0 ? '&since=' + this.lastEventId : '';
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
        if (this._opened && this._onReopen) this._onReopen();
        this._opened = true;
      });
    }

    _retry(source) {
      source.close();
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

    close() {
      this._closed = true;
      if (this._timer) clearTimeout(this._timer);
      if (this._source) this._source.close();
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
      this._stream = null;
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
    /** Powers the VM off and removes it with its disks; open() again to use the session. */
    close() { return this._act('close'); }

    /** 1 to 100 % of a core per vCPU; resolves with the new cap. */
    async setExecutionCap(cap) {
      const view = await this._call('PUT', '/execution-cap', { cap: Number(cap) });
      this._update(view);
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
      this._update(await this._call('GET', ''));
      return this;
    }

    /** Stops following the session's events (the session itself goes on). */
    disconnect() {
      if (this._stream) this._stream.close();
      this._stream = null;
    }

    // Internals.

    _call(method, path, body) {
      return this._daemon._request(method, API + '/sessions/' + this.id + path, { token: this._token, body });
    }

    _update(view) {
      if (view && typeof view === 'object') Object.assign(this._view, view);
    }

    /** Starts an action and waits for its operation to end; rejects if it fails. */
    async _act(action, body) {
      const reply = await this._call('POST', '/' + action, body);
      this._update(reply.session);
      let operation = reply.operation;
      while (operation.status === 'running') {
        operation = await this._daemon._request('GET', API + '/operations/' + operation.id + '/wait?timeout=60',
          { token: this._token });
      }
      try { await this.refresh(); } catch (ignored) { /* the operation's outcome is what the caller asked for */ }
      if (operation.status === 'failed') throw VMSessionError.from(operation.error, 0);
      return operation;
    }

    /** Follows the session's own event stream; resolves once connected (at most 5 s). */
    _follow() {
      const url = this._daemon.url + API + '/sessions/' + this.id + '/events?token=' + encodeURIComponent(this._token);
      this._stream = new ReplayingStream(url, message => this._receive(message), () => this.refresh().catch(() => {}));
      return this._stream.start(5000);
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
        case 'stateChanged': this._update({ state: data.state, stateCode: data.stateCode }); break;
        case 'executionCapChanged': this._update({ executionCap: data.cap }); break;
        case 'propertyChanged': this._properties[data.name] = data.value; break;
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
     * 429 too many requests in flight. Rejects (TypeError) when the browser cannot reach the daemon.
     */
    fetch(path, init) {
      const text = path === undefined || path === null ? '/' : String(path);
      const options = Object.assign({ cache: 'no-store' }, init || {});
      const headers = new Headers(options.headers || {});
      headers.set('Authorization', 'Bearer ' + this._session._token);
      options.headers = headers;
      return fetch(this.url + (text.startsWith('/') ? text : '/' + text), options);
    }
  }

  Object.defineProperty(Session.prototype, 'guest', {
    get() {
      if (!this._guest) this._guest = new GuestAPI(this);
      return this._guest;
    },
  });

  /**
   * The admin's view, with the admin token from <stateDir>/admin-token: every session, the web origins,
   * and one daemon-wide event stream that keeps every Session it handed out current. It fires each
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
      const reply = await this._request('GET', '/sessions');
      const seen = new Set();
      const sessions = reply.sessions.map(view => {
        seen.add(view.id);
        let session = this._sessions.get(view.id);
        if (session) session._update(view);
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

    /** Follows every session's events; resolves once connected (at most 5 s). */
    watch() {
      if (this._stream) return Promise.resolve();
      const url = this._daemon.url + API + '/events?token=' + encodeURIComponent(this._token);
      this._stream = new ReplayingStream(url, message => {
        const session = this._sessions.get(message.sessionId);
        if (session) session._receive(message);
        this.dispatchEvent(makeEvent(message.type, message.data || {}, message));
      }, () => this.dispatchEvent(new CustomEvent('reconnected')));
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
      const pending = this._requestSession(name, secret);
      if (typeof onSuccess !== 'function' && typeof onFailure !== 'function') return pending;
      pending.then(
        session => { if (typeof onSuccess === 'function') onSuccess(session); },
        error => { if (typeof onFailure === 'function') onFailure(error.legacyCode); });
      return 1;
    }

    async _requestSession(name, secret) {
      const grant = await this._request('POST', API + '/sessions', { body: { name: String(name), secret: String(secret) } });
      const session = new Session(this, grant.session, grant.token);
      await session._follow();
      return session;
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
      let response;
      try {
        response = await fetch(this.url + path, init);
      } catch (cause) {
        throw await this._whyUnreadable(cause);
      }
      const text = await response.text();
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

    /** A fetch the browser failed: a refused origin (the daemon answers a no-cors probe) or no daemon. */
    async _whyUnreadable(cause) {
      const origin = global.location ? global.location.origin : 'this page\'s origin';
      try {
        await fetch(this.url + '/vmsession.js', { mode: 'no-cors', cache: 'no-store' });
      } catch (probeFailed) {
        return new VMSessionError('unreachable',
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
   * Rejects with .code 'origin_not_approved' or 'unreachable' (see the top of this file).
   */
  async function connect(url) {
    const base = String(url || 'http://127.0.0.1:7011').replace(/\/+$/, '');
    const daemon = new Daemon(base);
    daemon.info = await daemon._request('GET', API);
    return daemon;
  }

  const VMSession = Object.freeze({
    version: '1.0.0', connect, STATES, EVENT_TYPES, ACTIONS,
    Error: VMSessionError, Session, Admin, Daemon,
  });
  global.VMSession = VMSession;
  if (typeof module === 'object' && module && module.exports) module.exports = VMSession;
})(typeof globalThis !== 'undefined' ? globalThis : this);
