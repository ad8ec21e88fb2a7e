// switchyard-client: the JavaScript client of the switchyard WebSocket broker.
//
// One file with no imports, on purpose: the broker serves it verbatim to browsers (at
// /switchyard.js), and Node uses the same file through package.json. It needs a WebSocket
// constructor: the global one (browsers; Node 22+, or Node 20 with --experimental-websocket),
// or one passed as the `WebSocket` option (e.g. the `ws` package).
//
// The wire protocol it speaks is docs/protocol.md in the switchyard repository. What this
// file adds on top: request ids with timeouts, reconnection with full-jitter backoff across
// several broker URLs, re-subscription with recovery from the last position seen on each
// history channel, token refresh on 4003, and a heartbeat that notices a dead connection.

const DEFAULTS = {
  requestTimeout: 10000, // ms an answer (ok/error/history/presence/pong) may take
  connectTimeout: 10000, // ms from opening a socket to its `welcome` frame
  pingInterval: 25000, // ms between heartbeats while connected; 0 turns them off
  minReconnectDelay: 500, // ms: the cap of the first reconnect delay ...
  maxReconnectDelay: 20000, // ms: ... doubling per failed attempt up to this
  batch: false, // ask for ?batch=1 frames (several objects per frame, split on \n)
};

// Close codes after which reconnecting would only fail again the same way (protocol.md:
// "only after fixing the client"), plus the RFC 6455 codes of the same nature that the
// broker does not send today (1003 unsupported data, 1008 policy violation, 1010 missing
// extension). 4003 (token expired) is terminal only when there is no getToken to refresh it.
const TERMINAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010]);

// Server error codes worth retrying a re-subscription for: the same request may succeed
// later. Any other error code ends the subscription.
const TRANSIENT_ERROR_CODES = new Set(["unavailable", "rate_limited", "timeout"]);

/**
 * An error from the broker (`code` is its error code: `forbidden`, `unavailable`, ...) or
 * from the client itself (`timeout`, `disconnected`, `closed`, `token_expired`, ...).
 */
export class SwitchyardError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.name = "SwitchyardError";
    this.code = code;
    if (details) Object.assign(this, details);
  }
}

/** The delay before reconnect attempt `attempt` (0-based): full jitter, capped. */
export function backoffDelay(attempt, { minReconnectDelay, maxReconnectDelay, random }) {
  // 2 ** attempt overflows to Infinity for large attempts; Math.min keeps the cap.
  const cap = Math.min(maxReconnectDelay, minReconnectDelay * 2 ** attempt);
  return Math.floor((random || Math.random)() * cap);
}

/**
 * The `exp` claim of a JWT, in seconds since the epoch, or undefined. The token is not
 * verified (only the broker can): this only spares a connection attempt that the broker
 * would refuse with 401, which the WebSocket API cannot tell from a network failure.
 */
function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/** A promise with its resolve/reject, and whether it has settled. */
function deferred() {
  const d = { settled: false };
  d.promise = new Promise((resolve, reject) => {
    d.resolve = (v) => {
      d.settled = true;
      resolve(v);
    };
    d.reject = (e) => {
      d.settled = true;
      reject(e);
    };
  });
  // A rejection nobody awaits (a `sub.ready` the application never looked at) must not crash
  // Node with an unhandled rejection; whoever awaits the promise still sees it.
  d.promise.catch(() => {});
  return d;
}

/** Calls an application callback; what it throws surfaces as an uncaught error, elsewhere. */
function callback(fn, arg) {
  if (typeof fn !== "function") return;
  try {
    fn(arg);
  } catch (e) {
    // Thrown outside the client's own stack, so a faulty handler can't leave the client's
    // state half-updated; the host still reports it (console, process 'uncaughtException').
    queueMicrotask(() => {
      throw e;
    });
  }
}

/**
 * One channel subscription. It lives until `unsubscribe()`, `client.close()`, or an error
 * that retrying would not fix; across reconnects it is re-subscribed by the client.
 */
export class Subscription {
  constructor(client, channel, options) {
    this.client = client;
    this.channel = channel;
    this._options = options;
    /** Last position seen on a history channel: {offset, epoch}, or null. */
    this.position = options.since ? { offset: options.since.offset, epoch: options.since.epoch } : null;
    /**
     * After a (re)subscription: true when every message since the previous subscription was
     * (or is being) replayed, false when some may be missing (reload the channel's state);
     * null after a first subscription without `since` (nothing to recover).
     */
    this.recovered = null;
    /** True once the subscription has ended for good. */
    this.closed = false;
    this._everSubscribed = false;
    this._retry = 0; // transient failures of the current (re)subscription, for backoff
    this._retryTimer = null;
    this._ready = deferred();
  }

  /**
   * Resolves with {offset, epoch, recovered, resubscribed} when the broker acknowledges the
   * current (re)subscription; rejects when the subscription ends instead. A fresh promise
   * replaces it when the connection drops, so `await sub.ready` after a reconnect waits for
   * the re-subscription.
   */
  get ready() {
    return this._ready.promise;
  }

  /** Messages kept on a history channel: {channel, offset, epoch, messages: [...]}. */
  history(options) {
    return this.client.history(this.channel, options);
  }

  /** One page of presence: {connections, users, members?, next_cursor?}. */
  presence(options) {
    return this.client.presence(this.channel, options);
  }

  /** Every present member, page after page (`pageSize` per request). */
  presenceMembers(options) {
    return this.client.presenceMembers(this.channel, options);
  }

  /** Ends the subscription; resolves when the broker acknowledged it (or at once offline). */
  unsubscribe() {
    if (this.closed) return Promise.resolve();
    this._end(new SwitchyardError("unsubscribed", `unsubscribed from ${this.channel}`), false);
    return this.client._unsubscribe(this.channel);
  }

  // --- used by Client ---

  _renewReady() {
    if (this._ready.settled) this._ready = deferred();
  }

  _onAck(ack, sentSince) {
    this._retry = 0;
    const resubscribed = this._everSubscribed;
    this._everSubscribed = true;
    if (sentSince) this.recovered = ack.recovered === true;
    else this.recovered = resubscribed ? false : null;
    // Where to resume from next time. After a complete recovery the replayed messages are
    // still on their way and each moves the position itself: jumping to the acknowledged
    // top now would skip them if the connection dropped mid-replay. Otherwise nothing is
    // replayed: the acknowledged top is the position (unless messages already passed it).
    if (typeof ack.offset === "number" && typeof ack.epoch === "string" && this.recovered !== true) {
      const p = this.position;
      if (!p || p.epoch !== ack.epoch || p.offset < ack.offset) {
        this.position = { offset: ack.offset, epoch: ack.epoch };
      }
    }
    const info = { offset: ack.offset, epoch: ack.epoch, recovered: this.recovered, resubscribed };
    this._ready.resolve(info);
    callback(this._options.onSubscribed, info);
  }

  _onMessage(frame) {
    if (typeof frame.offset === "number" && typeof frame.epoch === "string") {
      const p = this.position;
      // Never hand over a message twice: the broker promises no duplicate, and this keeps
      // that promise across reconnect races too.
      if (p && p.epoch === frame.epoch && frame.offset <= p.offset) return;
      this.position = { offset: frame.offset, epoch: frame.epoch };
    }
    callback(this._options.onMessage, frame);
  }

  _end(error, notify) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._retryTimer);
    this.client._subs.delete(this.channel);
    if (!this._ready.settled) this._ready.reject(error);
    if (notify) callback(this._options.onUnsubscribed, { reason: error.code, error });
  }
}

/**
 * A connection to a switchyard cluster that stays up by itself.
 *
 * Events (`client.on(name, fn)`):
 * - "connected" {conn, node, url}: a welcome frame arrived (first connection or reconnect)
 * - "disconnected" {code, reason, willReconnect}: a connection ended (or the client stopped)
 * - "reconnecting" {attempt, delay, url}: the next attempt is scheduled in `delay` ms
 * - "direct" {from, data, user}: a `send` addressed to this connection
 * - "error" SwitchyardError: something the application should know and no promise carries
 */
export class Client {
  constructor(urls, options = {}) {
    this._urls = Array.isArray(urls) ? urls.slice() : [urls];
    if (this._urls.length === 0) throw new TypeError("switchyard: at least one URL is needed");
    this._opts = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError(
        "switchyard: no WebSocket constructor: pass one as the `WebSocket` option " +
          "(on Node 20 run with --experimental-websocket, or use the `ws` package)",
      );
    }
    this._token = options.token;
    this._needFreshToken = false;
    this._listeners = new Map();
    this._subs = new Map(); // channel -> Subscription
    this._pending = new Map(); // request id -> {resolve, reject, timer}
    this._nextId = 1;
    this._ws = null;
    this._gen = 0; // bumped for every socket, so events of abandoned sockets are ignored
    this._urlIndex = 0;
    this._attempt = 0; // consecutive failed attempts, for the backoff
    this._reconnectTimer = null;
    this._connectTimer = null;
    this._pingTimer = null;
    this._state = "connecting";
    this._closed = false;
    this._stopError = null; // why the client stopped by itself, for whenConnected()
    this._welcomed = false; // the current socket got its welcome
    this._everConnected = false;
    this._url = null; // the current socket's URL
    this.conn = null;
    this.node = null;
    this._connect();
  }

  /** "connecting" | "connected" | "reconnecting" | "closed" */
  get state() {
    return this._state;
  }

  /** Registers `fn` for `event`; returns a function that removes it. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  /** Resolves when connected (at once if it is); rejects if the client stops first. */
  whenConnected() {
    if (this._state === "connected") return Promise.resolve({ conn: this.conn, node: this.node });
    if (this._state === "closed") {
      return Promise.reject(this._stopError || new SwitchyardError("closed", "the client is closed"));
    }
    return new Promise((resolve, reject) => {
      const offC = this.on("connected", (info) => {
        offC();
        offD();
        resolve(info);
      });
      const offD = this.on("disconnected", (info) => {
        if (info.willReconnect) return;
        offC();
        offD();
        reject(info.error || new SwitchyardError("closed", "the client stopped"));
      });
    });
  }

  /**
   * Subscribes to `channel` now and after every reconnect. Options: onMessage(frame),
   * onPresence(diff), onSubscribed({offset, epoch, recovered, resubscribed}),
   * onUnsubscribed({reason, error}), since: {offset, epoch} (resume from a stored position).
   */
  subscribe(channel, options = {}) {
    if (this._closed) throw new SwitchyardError("closed", "the client is closed");
    if (this._subs.has(channel)) {
      throw new SwitchyardError("already_subscribed", `already subscribed to ${channel}`);
    }
    const sub = new Subscription(this, channel, options);
    this._subs.set(channel, sub);
    if (this._state === "connected") this._sendSubscribe(sub);
    // Otherwise it goes out with the others once connected.
    return sub;
  }

  /** Resolves with {offset, epoch} on a history channel, {} otherwise. */
  async publish(channel, data) {
    const ack = await this._request({ op: "publish", channel, data });
    const position = {};
    if (ack.offset !== undefined) position.offset = ack.offset;
    if (ack.epoch !== undefined) position.epoch = ack.epoch;
    return position;
  }

  /** Sends `data` to one connection (by its id) as a `direct` frame. */
  async send(to, data) {
    await this._request({ op: "send", to, data });
  }

  /** {channel, offset, epoch, messages}; options {limit, since}. */
  history(channel, { limit, since } = {}) {
    const frame = { op: "history", channel };
    if (limit !== undefined) frame.limit = limit;
    if (since !== undefined) frame.since = since;
    return this._request(frame);
  }

  /** One page: {channel, connections, users, members?, next_cursor?}; options {limit, cursor, members}. */
  presence(channel, { limit, cursor, members } = {}) {
    const frame = { op: "presence", channel };
    if (limit !== undefined) frame.limit = limit;
    if (cursor !== undefined) frame.cursor = cursor;
    if (members !== undefined) frame.members = members;
    return this._request(frame);
  }

  /** Every member {conn, user} present on `channel`, fetching `pageSize` per request. */
  async *presenceMembers(channel, { pageSize = 100 } = {}) {
    let cursor;
    do {
      const page = await this.presence(channel, { limit: pageSize, cursor });
      for (const member of page.members || []) yield member;
      cursor = page.next_cursor;
    } while (cursor);
  }

  /** Round trip to the broker, in ms. */
  async ping() {
    const start = Date.now();
    await this._request({ op: "ping" });
    return Date.now() - start;
  }

  /** Closes the connection for good: no reconnect; pending requests reject with "closed". */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._reconnectTimer);
    const error = new SwitchyardError("closed", "the client was closed");
    for (const sub of [...this._subs.values()]) sub._end(error, false);
    if (this._ws) {
      this._abandonSocket();
      this._connectionEnded(1000, "client closed", error);
    } else {
      this._state = "closed";
      this._emit("disconnected", { code: 1000, reason: "client closed", willReconnect: false });
    }
  }

  // --- connection ---

  async _connect() {
    this._reconnectTimer = null;
    if (this._closed) return;
    this._state = this._everConnected ? "reconnecting" : "connecting";
    const gen = ++this._gen;
    if (this._opts.getToken && (this._needFreshToken || this._token == null || this._tokenExpired())) {
      try {
        this._token = await this._opts.getToken();
        this._needFreshToken = false;
      } catch (e) {
        if (gen !== this._gen || this._closed) return;
        this._emit("error", new SwitchyardError("token_refresh_failed", `getToken failed: ${e && e.message}`, { cause: e }));
        this._scheduleReconnect();
        return;
      }
      if (gen !== this._gen || this._closed) return;
    } else if (this._tokenExpired()) {
      // The broker would refuse it with 401, again and again.
      this._stop(new SwitchyardError("token_expired", "the token has expired and there is no getToken to renew it"), 4003, "token expired");
      return;
    }
    const url = this._urls[this._urlIndex];
    let ws;
    try {
      ws = new this._WebSocket(this._socketUrl(url));
    } catch (e) {
      // A malformed URL: no attempt on it will ever work.
      this._stop(new SwitchyardError("bad_url", `cannot connect to ${url}: ${e && e.message}`, { cause: e }), 1006, "bad url");
      return;
    }
    this._ws = ws;
    this._url = url;
    this._welcomed = false;
    this._connectTimer = setTimeout(() => {
      if (gen !== this._gen) return;
      this._abandonSocket();
      this._connectionEnded(1006, "connect timeout");
    }, this._opts.connectTimeout);
    ws.onmessage = (ev) => {
      if (gen === this._gen) this._onData(ev.data);
    };
    ws.onclose = (ev) => {
      if (gen !== this._gen) return;
      this._ws = null;
      this._connectionEnded(ev.code, ev.reason || "");
    };
    // A failed connection ends with 1006 whatever else happens: browsers fire close after
    // error, but Node 20's WebSocket (undici) fires only error when the connection is
    // refused, which would leave the attempt hanging until connectTimeout. Abandoning the
    // socket here makes a close event that may follow count for nothing.
    ws.onerror = () => {
      if (gen !== this._gen) return;
      this._abandonSocket();
      this._connectionEnded(1006, "connection error");
    };
  }

  _tokenExpired() {
    if (typeof this._token !== "string") return false;
    const exp = tokenExpiry(this._token);
    return exp !== undefined && exp * 1000 <= Date.now();
  }

  _socketUrl(base) {
    const u = new URL(base);
    if (this._token) u.searchParams.set("token", this._token);
    if (this._opts.batch) u.searchParams.set("batch", "1");
    return u.toString();
  }

  /** Stops listening to the current socket and closes it; its own events no longer count. */
  _abandonSocket() {
    const ws = this._ws;
    this._ws = null;
    this._gen++;
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // Closing a socket that never opened may throw on some implementations.
      }
    }
  }

  _onData(data) {
    if (typeof data !== "string") return; // the broker sends text frames only
    // A ?batch=1 frame holds several objects separated by \n; the broker never puts a raw
    // newline inside an object, so splitting is safe for unbatched frames too.
    for (const line of data.split("\n")) {
      if (!line) continue;
      let frame;
      try {
        frame = JSON.parse(line);
      } catch {
        this._emit("error", new SwitchyardError("bad_frame", `the broker sent non-JSON: ${line.slice(0, 100)}`));
        continue;
      }
      this._onFrame(frame);
      // A handler may have closed the client, or dropped this socket.
      if (this._ws === null) return;
    }
  }

  _onFrame(frame) {
    if (frame.id !== undefined && this._pending.has(frame.id)) {
      const p = this._pending.get(frame.id);
      this._pending.delete(frame.id);
      clearTimeout(p.timer);
      if (frame.op === "error") p.reject(new SwitchyardError(frame.code, frame.message, { frame }));
      else p.resolve(frame);
      return;
    }
    switch (frame.op) {
      case "welcome":
        return this._onWelcome(frame);
      case "message": {
        const sub = this._subs.get(frame.channel);
        if (sub) sub._onMessage(frame);
        return;
      }
      case "presence_diff": {
        const sub = this._subs.get(frame.channel);
        if (sub) callback(sub._options.onPresence, frame);
        return;
      }
      case "direct":
        return this._emit("direct", { from: frame.from, data: frame.data, user: frame.user });
      case "unsubscribed":
        return this._onServerUnsubscribed(frame);
      case "error":
        return this._emit("error", new SwitchyardError(frame.code, frame.message, { frame }));
      default:
      // Answers to requests that timed out, and ops of later protocol versions.
    }
  }

  _onWelcome(frame) {
    clearTimeout(this._connectTimer);
    this._welcomed = true;
    this._everConnected = true;
    this._attempt = 0;
    this._state = "connected";
    this.conn = frame.conn;
    this.node = frame.node;
    this._schedulePing();
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    this._emit("connected", { conn: frame.conn, node: frame.node, url: this._url });
  }

  _schedulePing() {
    if (!(this._opts.pingInterval > 0)) return;
    const gen = this._gen;
    this._pingTimer = setTimeout(async () => {
      if (gen !== this._gen) return;
      try {
        await this._request({ op: "ping" });
      } catch (e) {
        if (gen !== this._gen) return;
        // No answer in time: the connection is dead or the broker stuck. Try another.
        if (e.code === "timeout") {
          this._abandonSocket();
          this._connectionEnded(1006, "ping timeout");
        }
        return;
      }
      if (gen === this._gen) this._schedulePing();
    }, this._opts.pingInterval);
  }

  /** A connection (or an attempt) ended: clean up, then reconnect or stop. */
  _connectionEnded(code, reason, closedError) {
    clearTimeout(this._connectTimer);
    clearTimeout(this._pingTimer);
    const wasConnected = this._welcomed;
    this._welcomed = false;
    this._ws = null;
    const failure = closedError || new SwitchyardError("disconnected", `connection lost (${code}${reason ? ` ${reason}` : ""})`);
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(failure);
      this._pending.delete(id);
    }
    for (const sub of this._subs.values()) {
      clearTimeout(sub._retryTimer);
      sub._renewReady();
    }
    if (this._closed) {
      this._state = "closed";
      this._emit("disconnected", { code, reason, willReconnect: false });
      return;
    }
    if (TERMINAL_CLOSE_CODES.has(code)) {
      return this._stop(new SwitchyardError("closed", `the broker closed the connection with ${code} (${reason}); reconnecting would fail again`, { closeCode: code }), code, reason);
    }
    if (code === 4003 || (!wasConnected && this._tokenExpired())) {
      if (!this._opts.getToken) {
        return this._stop(new SwitchyardError("token_expired", "the token expired and there is no getToken to renew it", { closeCode: code }), code, reason);
      }
      this._needFreshToken = true;
    }
    if (wasConnected) this._emit("disconnected", { code, reason, willReconnect: true });
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const delay = backoffDelay(this._attempt, this._opts);
    this._attempt++;
    // Rotate: the node that just failed is the least likely to answer next.
    this._urlIndex = (this._urlIndex + 1) % this._urls.length;
    this._state = "reconnecting";
    this._emit("reconnecting", { attempt: this._attempt, delay, url: this._urls[this._urlIndex] });
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  /** Gives up for good after an error that retrying would repeat. */
  _stop(error, code, reason) {
    this._closed = true;
    this._stopError = error;
    this._state = "closed";
    for (const sub of [...this._subs.values()]) sub._end(error, false);
    this._emit("error", error);
    this._emit("disconnected", { code, reason, willReconnect: false, error });
  }

  // --- requests ---

  _request(frame) {
    if (this._state !== "connected" || !this._ws) {
      const code = this._closed ? "closed" : "disconnected";
      return Promise.reject(new SwitchyardError(code, `not connected (${this._state}): ${frame.op} not sent`));
    }
    const id = this._nextId++;
    const text = JSON.stringify({ ...frame, id });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SwitchyardError("timeout", `no answer to ${frame.op} within ${this._opts.requestTimeout} ms`));
      }, this._opts.requestTimeout);
      this._pending.set(id, { resolve, reject, timer });
      try {
        this._ws.send(text);
      } catch (e) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new SwitchyardError("disconnected", `send failed: ${e && e.message}`));
      }
    });
  }

  _sendSubscribe(sub) {
    const frame = { op: "subscribe", channel: sub.channel };
    const since = sub.position;
    if (since) frame.since = { offset: since.offset, epoch: since.epoch };
    const gen = this._gen;
    this._request(frame).then(
      (ack) => {
        if (!sub.closed && this._subs.get(sub.channel) === sub) sub._onAck(ack, !!since);
      },
      (error) => {
        if (sub.closed || gen !== this._gen) return;
        // Lost with the connection: the next connection subscribes again.
        if (error.code === "disconnected" || error.code === "closed") return;
        if (sub._everSubscribed && TRANSIENT_ERROR_CODES.has(error.code)) {
          // A re-subscription keeps trying: the subscription was good and should come back.
          this._emit("error", error);
          const delay = backoffDelay(sub._retry++, this._opts);
          sub._retryTimer = setTimeout(() => {
            if (!sub.closed && gen === this._gen) this._sendSubscribe(sub);
          }, delay);
          return;
        }
        // A first subscription reports every failure to whoever awaits sub.ready.
        if (sub._everSubscribed) this._emit("error", error);
        sub._end(error, true);
      },
    );
  }

  _unsubscribe(channel) {
    if (this._state !== "connected") return Promise.resolve();
    return this._request({ op: "unsubscribe", channel }).then(
      () => undefined,
      (error) => {
        // Offline, the subscription is gone with the connection anyway.
        if (error.code !== "disconnected" && error.code !== "closed") throw error;
      },
    );
  }

  _onServerUnsubscribed(frame) {
    const sub = this._subs.get(frame.channel);
    if (!sub) return;
    const error = new SwitchyardError(frame.reason || "unsubscribed", `the broker ended the subscription to ${frame.channel} (${frame.reason})`, { frame });
    if (frame.reason === "unavailable") {
      // Its backend is unreachable for now: subscribe again (with recovery) after a delay.
      sub._renewReady();
      this._emit("error", error);
      const gen = this._gen;
      const delay = backoffDelay(sub._retry++, this._opts);
      sub._retryTimer = setTimeout(() => {
        if (!sub.closed && gen === this._gen) this._sendSubscribe(sub);
      }, delay);
      return;
    }
    this._emit("error", error);
    sub._end(error, true);
  }

  _emit(event, arg) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) callback(fn, arg);
  }
}
