// Reconnection policy on a fake clock: full-jitter delays within [0, min(20 s, 0.5 s·2^n)],
// rotation across URLs, the reset after a successful connection, which close codes are
// retried and which stop the client, 4003 with getToken, and the connect timeout.
//
// These drive the client with a scripted WebSocket and node:test's mock timers, so the delays
// can be asserted to the millisecond without waiting for them. The last test checks the same
// policy (a terminal close code) against a real broker.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Client, backoffDelay } from "../src/index.js";
import { nextEvent, sleep, startBroker } from "./helpers.mjs";

/** A WebSocket whose life the test scripts: welcome(), drop(code), and what was sent. */
function fakeSockets() {
  const made = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closedByClient = false;
      made.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close() {
      this.closedByClient = true;
    }
    receive(frame) {
      this.onmessage({ data: JSON.stringify(frame) });
    }
    welcome(node = "n1") {
      this.receive({ op: "welcome", conn: `${node}:0123456789abcdef`, node });
    }
    drop(code = 1006, reason = "") {
      this.onclose({ code, reason });
    }
    fail() {
      this.onerror({ type: "error" });
    }
  }
  return { FakeWebSocket, made };
}

/** A client on fake sockets and fake timers, recording its events. */
function setup(t, urls, options = {}) {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { FakeWebSocket, made } = fakeSockets();
  const client = new Client(urls, { WebSocket: FakeWebSocket, pingInterval: 0, ...options });
  const events = [];
  for (const name of ["connected", "disconnected", "reconnecting", "error"]) {
    client.on(name, (arg) => events.push([name, arg]));
  }
  t.after(() => client.close());
  const last = () => made[made.length - 1];
  return { client, made, events, last, tick: (ms) => t.mock.timers.tick(ms) };
}

/** Lets pending promise callbacks run (setImmediate is not among the mocked timers). */
const flush = () => new Promise((resolve) => setImmediate(resolve));

const CAPS = [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000];

test("each delay is a full jitter draw from [0, min(20 s, 0.5 s·2^n)], and waits exactly that long", (t) => {
  let draw = 0.5;
  const { made, events, last, tick } = setup(t, ["ws://a/ws"], { random: () => draw });
  assert.equal(made.length, 1, "the first attempt is immediate");
  for (const [n, cap] of CAPS.entries()) {
    draw = [0.5, 0.999, 0][n % 3];
    last().drop(1006);
    const [name, info] = events.pop();
    assert.equal(name, "reconnecting");
    assert.equal(info.attempt, n + 1);
    assert.equal(info.delay, Math.floor(draw * cap), `attempt ${n + 1}: cap ${cap}`);
    const before = made.length;
    if (info.delay > 0) {
      tick(info.delay - 1);
      assert.equal(made.length, before, "not before the delay");
    }
    tick(1);
    assert.equal(made.length, before + 1, "right at the delay");
  }
});

test("with Math.random the delays spread over the whole window, never past the cap", () => {
  const options = { minReconnectDelay: 500, maxReconnectDelay: 20000 };
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(20000, 500 * 2 ** attempt);
    const delays = Array.from({ length: 2000 }, () => backoffDelay(attempt, options));
    assert.ok(
      delays.every((d) => Number.isInteger(d) && d >= 0 && d <= cap),
      `attempt ${attempt}: within [0, ${cap}]`,
    );
    // Full jitter: both halves of the window are used (2000 draws miss one with p = 2^-2000).
    assert.ok(delays.some((d) => d < cap / 2) && delays.some((d) => d >= cap / 2), `attempt ${attempt} spreads`);
  }
  assert.equal(backoffDelay(1000, { ...options, random: () => 0.5 }), 10000, "2^1000 overflows to the cap");
});

test("attempts rotate across the URLs", (t) => {
  const { made, last, tick } = setup(t, ["ws://a/ws", "ws://b/ws", "ws://c/ws"], { random: () => 1 });
  for (let i = 0; i < 6; i++) {
    last().drop(1006);
    tick(20000);
  }
  assert.deepEqual(
    made.map((ws) => new URL(ws.url).host),
    ["a", "b", "c", "a", "b", "c", "a"],
  );
});

test("a successful connection resets the backoff", (t) => {
  const { events, last, tick } = setup(t, ["ws://a/ws", "ws://b/ws"], { random: () => 1 });
  const delays = () => events.filter(([n]) => n === "reconnecting").map(([, i]) => i.delay);
  for (let i = 0; i < 3; i++) {
    last().drop(1006);
    tick(20000);
  }
  assert.deepEqual(delays(), [500, 1000, 2000]);
  last().welcome();
  last().drop(1001, "shutting down");
  assert.deepEqual(delays(), [500, 1000, 2000, 500], "back to the first step");
  const disconnected = events.filter(([n]) => n === "disconnected").map(([, i]) => i);
  assert.deepEqual(disconnected, [{ code: 1001, reason: "shutting down", willReconnect: true }]);
});

test("close codes that invite a reconnect are retried", (t) => {
  const { made, last, tick } = setup(t, ["ws://a/ws"], { random: () => 1 });
  // 1000 ping timeout, 1001 shutdown, 1005 no status, 1006 dropped, 1011 server error,
  // 4001 slow consumer, 4004 history lost.
  for (const code of [1000, 1001, 1005, 1006, 1011, 4001, 4004]) {
    last().welcome();
    const before = made.length;
    last().drop(code);
    tick(500);
    assert.equal(made.length, before + 1, `reconnected after ${code}`);
  }
});

test("codes that would fail again stop the client, with the reason", async (t) => {
  for (const code of [1002, 1003, 1007, 1008, 1009, 1010, 4003]) {
    await t.test(`close ${code}`, (t) => {
      const { client, made, events, last, tick } = setup(t, ["ws://a/ws"]);
      const sub = client.subscribe("room.1");
      last().welcome();
      last().drop(code, "because");
      tick(120000);
      assert.equal(made.length, 1, "no new attempt");
      assert.equal(client.state, "closed");
      const [[e1, error], [e2, info]] = events.slice(-2);
      assert.equal(e1, "error");
      assert.equal(error.code, code === 4003 ? "token_expired" : "closed");
      assert.equal(error.closeCode, code);
      assert.equal(e2, "disconnected");
      assert.deepEqual(info, { code, reason: "because", willReconnect: false, error });
      assert.equal(sub.closed, true);
    });
  }
});

test("4003 with getToken: a fresh token for the next connection", async (t) => {
  const tokens = ["first", "second"];
  let calls = 0;
  const { made, last, tick } = setup(t, ["ws://a/ws"], {
    random: () => 0,
    getToken: async () => tokens[calls++],
  });
  await flush(); // getToken is awaited before the first socket
  assert.equal(calls, 1, "no token given: getToken supplies the first");
  assert.equal(new URL(made[0].url).searchParams.get("token"), "first");
  last().welcome();
  last().drop(4003, "token expired");
  tick(0);
  await flush();
  assert.equal(calls, 2);
  assert.equal(made.length, 2);
  assert.equal(new URL(made[1].url).searchParams.get("token"), "second");
});

test("an error event alone ends the attempt (Node 20's WebSocket fires no close when refused)", (t) => {
  const { made, events, tick } = setup(t, ["ws://a/ws"], { random: () => 0 });
  made[0].fail();
  assert.equal(made[0].closedByClient, true);
  assert.deepEqual(events.at(-1), ["reconnecting", { attempt: 1, delay: 0, url: "ws://a/ws" }]);
  made[0].drop(1006); // a close that does follow (browsers) counts for nothing more
  assert.equal(events.filter(([n]) => n === "reconnecting").length, 1);
  tick(0);
  assert.equal(made.length, 2);
  // An established connection that fails is a disconnect like any other.
  made[1].welcome();
  made[1].fail();
  assert.deepEqual(events.at(-2), ["disconnected", { code: 1006, reason: "connection error", willReconnect: true }]);
});

test("a socket that never says welcome is given up after connectTimeout", (t) => {
  const { made, events, tick } = setup(t, ["ws://a/ws", "ws://b/ws"], { connectTimeout: 3000, random: () => 0 });
  tick(2999);
  assert.equal(made.length, 1);
  tick(1);
  assert.equal(made[0].closedByClient, true);
  assert.deepEqual(events.at(-1), ["reconnecting", { attempt: 1, delay: 0, url: "ws://b/ws" }]);
  tick(0);
  assert.equal(made.length, 2);
  assert.equal(new URL(made[1].url).host, "b");
});

test("re-subscription after a reconnect: since from the last position, a fresh ready", async (t) => {
  const { client, last, tick } = setup(t, ["ws://a/ws"], { random: () => 0 });
  const seen = [];
  const sub = client.subscribe("chat.1", { onMessage: (m) => seen.push(m.offset) });
  last().welcome();
  const [subscribe] = last().sent;
  assert.deepEqual(subscribe, { op: "subscribe", channel: "chat.1", id: subscribe.id });
  last().receive({ op: "ok", id: subscribe.id, offset: 7, epoch: "E" });
  assert.deepEqual(await sub.ready, { offset: 7, epoch: "E", recovered: null, resubscribed: false });
  last().receive({ op: "message", channel: "chat.1", data: 1, offset: 8, epoch: "E" });
  last().receive({ op: "message", channel: "chat.1", data: 1, offset: 8, epoch: "E" }); // a duplicate
  assert.deepEqual(seen, [8]);

  last().drop(1006);
  tick(0);
  last().welcome();
  const [again] = last().sent;
  assert.deepEqual(again.since, { offset: 8, epoch: "E" });
  last().receive({ op: "ok", id: again.id, offset: 10, epoch: "E", recovered: true });
  assert.deepEqual(await sub.ready, { offset: 10, epoch: "E", recovered: true, resubscribed: true });
  // The replay moves the position, not the ack: a drop now resumes after 8, not 10.
  assert.deepEqual(sub.position, { offset: 8, epoch: "E" });
  last().receive({ op: "message", channel: "chat.1", data: 1, offset: 9, epoch: "E" });
  last().drop(1006);
  tick(0);
  last().welcome();
  assert.deepEqual(last().sent[0].since, { offset: 9, epoch: "E" });
  last().receive({ op: "ok", id: last().sent[0].id, offset: 12, epoch: "F", recovered: false });
  assert.equal((await sub.ready).recovered, false);
  assert.deepEqual(sub.position, { offset: 12, epoch: "F" }, "nothing replayed: resume from the top");
});

test("against a real broker: a terminal close (1009, frame too large) is not retried", async () => {
  const broker = await startBroker(`
[backends.local]
kind = "memory"

[[routes]]
match = "**"
subscribe = "anyone"
publish = "anyone"
`);
  try {
    const client = new Client([broker.ws], { minReconnectDelay: 50 });
    await client.whenConnected();
    const stopped = nextEvent(client, "disconnected");
    const errored = nextEvent(client, "error");
    // Over server.max_frame_bytes (64 KiB): the broker closes with 1009.
    await assert.rejects(client.publish("room.1", "x".repeat(70000)), (e) => e.code === "disconnected");
    const info = await stopped;
    assert.equal(info.code, 1009);
    assert.equal(info.willReconnect, false);
    assert.equal((await errored).closeCode, 1009);
    assert.equal(client.state, "closed");
    // With a 50 ms backoff, a retry would have shown within this.
    await sleep(1000);
    assert.equal(await broker.metric("switchyard_connections_total"), 1, "one connection, never retried");
  } finally {
    await broker.kill();
  }
});
