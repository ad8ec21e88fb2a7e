// The client against real `switchyard serve` processes on the memory backend: positions on
// acks and messages, history, send/direct, error codes, unsubscribe, batch frames, request
// timeouts, publishing while disconnected, the heartbeat noticing a stuck broker (and the
// recovery that follows), a broker restart that loses history, and close().

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { Client, SwitchyardError } from "../src/index.js";
import { collector, freePort, nextEvent, sleep, startBroker, tempDir, waitFor, within } from "./helpers.mjs";

const API_KEY = "js-client-test-key";

/** `chat.*` keeps history; `live.*` does not; `news.*` and `private.*` refuse something. */
function config(dir) {
  const keys = join(dir, "api-keys");
  writeFileSync(keys, `${API_KEY}\n`);
  return `
[limits]
publish_rate = 100000
publish_burst = 100000

[auth]
send = "anyone"
api_keys_file = ${JSON.stringify(keys)}

[backends.local]
kind = "memory"

[[routes]]
match = "chat.{room}"
subscribe = "anyone"
publish = "anyone"
history_size = 100
max_message_bytes = 1024

[[routes]]
match = "live.{room}"
subscribe = "anyone"
publish = "anyone"

[[routes]]
match = "news.{room}"
subscribe = "anyone"
publish = "nobody"

[[routes]]
match = "private.{room}"
subscribe = "nobody"
publish = "anyone"
`;
}

async function ownBroker(options = {}) {
  const dir = tempDir();
  return startBroker(config(dir), { dir, ...options });
}

/** Publishes through the HTTP API, as an application server does. */
async function apiPublish(broker, channel, data) {
  const res = await fetch(`${broker.http}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, `api publish: ${JSON.stringify(body)}`);
  return body;
}

let broker;
const clients = [];

/** A client that the file's `after` closes; test-friendly timings unless overridden. */
function client(urls, options = {}) {
  const c = new Client(urls ?? [broker.ws], { minReconnectDelay: 100, maxReconnectDelay: 1000, ...options });
  clients.push(c);
  return c;
}

before(async () => {
  broker = await ownBroker();
});

after(async () => {
  for (const c of clients) c.close();
  await broker?.kill();
});

test("acks and messages on a history channel carry offset and epoch", async () => {
  const c = client();
  const got = collector();
  const sub = c.subscribe("chat.positions", { onMessage: got.push });
  const ready = await within(5000, sub.ready, "subscribe ack");
  assert.equal(ready.offset, 0, "a new stream starts at 0");
  assert.equal(typeof ready.epoch, "string");
  assert.equal(ready.recovered, null, "a first subscription has nothing to recover");
  assert.equal(ready.resubscribed, false);

  const acks = [];
  for (const n of [1, 2, 3]) acks.push(await c.publish("chat.positions", { n }));
  assert.deepEqual(
    acks,
    [1, 2, 3].map((offset) => ({ offset, epoch: ready.epoch })),
  );
  await got.until(3);
  assert.deepEqual(
    got.items.map((m) => [m.channel, m.offset, m.epoch, m.data.n, m.user]),
    [1, 2, 3].map((n) => ["chat.positions", n, ready.epoch, n, undefined]),
  );
  assert.deepEqual(sub.position, { offset: 3, epoch: ready.epoch });

  // Without history the ack has no position, and neither has the message.
  const live = collector();
  const liveSub = c.subscribe("live.positions", { onMessage: live.push });
  assert.deepEqual(await liveSub.ready, { offset: undefined, epoch: undefined, recovered: null, resubscribed: false });
  assert.deepEqual(await c.publish("live.positions", { text: "hi" }), {});
  await live.until(1);
  assert.deepEqual(live.items[0].data, { text: "hi" });
  assert.equal(live.items[0].offset, undefined);
});

test("history returns the latest messages and pages forward with since", async () => {
  const c = client();
  await c.whenConnected(); // publishing before that would be refused: no hidden buffering
  for (let n = 1; n <= 5; n++) await c.publish("chat.history", { n });
  const sub = c.subscribe("chat.history");
  await sub.ready;
  const latest = await sub.history({ limit: 2 });
  assert.equal(latest.channel, "chat.history");
  assert.equal(latest.offset, 5);
  assert.deepEqual(
    latest.messages.map((m) => [m.offset, m.data.n]),
    [
      [4, 4],
      [5, 5],
    ],
  );
  const page = await c.history("chat.history", { since: 1, limit: 3 });
  assert.deepEqual(
    page.messages.map((m) => m.offset),
    [2, 3, 4],
  );
});

test("send delivers a direct frame to another connection; an unknown id is not_found", async () => {
  const alice = client();
  const bob = client();
  const [a, b] = await Promise.all([alice.whenConnected(), bob.whenConnected()]);
  assert.match(a.conn, /^.+:[0-9a-f]{16}$/);
  assert.equal(alice.conn, a.conn);
  const direct = nextEvent(bob, "direct");
  await alice.send(b.conn, { text: "psst" });
  assert.deepEqual(await direct, { from: a.conn, data: { text: "psst" }, user: undefined });

  const missing = a.conn.replace(/:[0-9a-f]{16}$/, ":0000000000000000");
  await assert.rejects(alice.send(missing, 1), (e) => e instanceof SwitchyardError && e.code === "not_found");
});

test("errors carry the broker's code and message", async () => {
  const c = client();
  await c.whenConnected();
  const expectCode = async (promise, code) => {
    await assert.rejects(promise, (e) => {
      assert.ok(e instanceof SwitchyardError, `not a SwitchyardError: ${e}`);
      assert.equal(e.code, code, e.message);
      assert.ok(e.message.length > 0 && e.message !== code, `a message from the broker: ${e.message}`);
      return true;
    });
  };
  await expectCode(c.publish("nowhere.x", 1), "no_route");
  await expectCode(c.publish("bad..name", 1), "invalid_channel");
  await expectCode(c.publish("news.x", 1), "forbidden");
  await expectCode(c.publish("chat.big", "x".repeat(2000)), "too_large");
  await expectCode(c.history("live.x", { limit: 1 }), "bad_request");

  // A refused first subscription rejects `ready` and ends the subscription.
  let ended = null;
  const sub = c.subscribe("private.x", { onUnsubscribed: (e) => (ended = e) });
  await expectCode(sub.ready, "forbidden");
  assert.equal(sub.closed, true);
  assert.equal(ended.reason, "forbidden");
  // ... so the channel can be subscribed to again (and fails again).
  await expectCode(c.subscribe("private.x").ready, "forbidden");

  assert.throws(
    () => {
      c.subscribe("chat.twice");
      c.subscribe("chat.twice");
    },
    (e) => e.code === "already_subscribed",
  );
  // The connection is unharmed by all of it.
  assert.ok((await c.ping()) >= 0);
});

test("unsubscribe stops delivery, and the broker lets the subscription go", async () => {
  const b = await ownBroker();
  try {
    const c = client([b.ws]);
    const publisher = client([b.ws]);
    const got = collector();
    const sub = c.subscribe("live.unsub", { onMessage: got.push });
    await sub.ready;
    assert.equal(await b.metric("switchyard_subscriptions"), 1);
    await publisher.publish("live.unsub", "before");
    await got.until(1);

    await sub.unsubscribe();
    assert.equal(sub.closed, true);
    assert.equal(await b.metric("switchyard_subscriptions"), 0, "the broker dropped the subscription");
    await publisher.publish("live.unsub", "after");
    // A later message on a channel still held proves the connection read past "after".
    const barrier = collector();
    await c.subscribe("live.barrier", { onMessage: barrier.push }).ready;
    await publisher.publish("live.barrier", "marker");
    await barrier.until(1);
    assert.deepEqual(
      got.items.map((m) => m.data),
      ["before"],
    );
  } finally {
    await b.kill();
  }
});

test("batch frames are split into their messages, in order", async () => {
  const c0 = client();
  await c0.whenConnected();
  for (let n = 1; n <= 60; n++) await c0.publish("chat.batch", { n });
  const { epoch } = await c0.history("chat.batch", { limit: 0 });

  // A WebSocket that remembers the raw frames, to see that batches did arrive.
  const raw = [];
  class RecordingWebSocket extends WebSocket {
    constructor(url) {
      super(url);
      assert.match(url, /[?&]batch=1(&|$)/);
      this.addEventListener("message", (ev) => raw.push(ev.data));
    }
  }
  const got = collector();
  const c = client([broker.ws], { batch: true, WebSocket: RecordingWebSocket });
  // Recovering 60 messages queues them at once: the broker packs them into batch frames.
  const sub = c.subscribe("chat.batch", { since: { offset: 0, epoch }, onMessage: got.push });
  const ready = await sub.ready;
  assert.equal(ready.recovered, true);
  await got.until(60);
  assert.deepEqual(
    got.items.map((m) => m.data.n),
    Array.from({ length: 60 }, (_, i) => i + 1),
  );
  assert.ok(
    raw.some((f) => f.includes("\n")),
    `expected at least one frame holding several objects among ${raw.length} frames`,
  );
});

test("a request without an answer times out", async () => {
  const b = await ownBroker();
  try {
    const c = client([b.ws], { requestTimeout: 300, pingInterval: 0 });
    await c.whenConnected();
    // A stopped broker keeps the TCP connection (the kernel still acknowledges) but answers
    // nothing.
    await b.pause();
    const start = Date.now();
    await assert.rejects(c.publish("live.t", 1), (e) => e instanceof SwitchyardError && e.code === "timeout");
    const took = Date.now() - start;
    assert.ok(took >= 290 && took < 3000, `timed out after ${took} ms`);
    b.resume();
    // The connection itself survived the stall.
    assert.ok((await c.ping()) >= 0);
  } finally {
    b.resume();
    await b.kill();
  }
});

test("publish while disconnected rejects at once", async () => {
  // Nothing listens there: the client keeps trying, and publishes are refused meanwhile.
  const port = await freePort();
  const c = client([`ws://127.0.0.1:${port}/ws`]);
  let start = Date.now();
  await assert.rejects(c.publish("live.x", 1), (e) => e instanceof SwitchyardError && e.code === "disconnected");
  assert.ok(Date.now() - start < 100, "rejected at once");
  await assert.rejects(c.send("x:0000000000000000", 1), (e) => e.code === "disconnected");
  await assert.rejects(c.history("chat.x"), (e) => e.code === "disconnected");
  c.close();

  // After losing a connection too.
  const b = await ownBroker();
  const d = client([b.ws]);
  await d.whenConnected();
  const gone = nextEvent(d, "disconnected");
  await b.kill();
  const info = await gone;
  assert.equal(info.willReconnect, true);
  assert.equal(info.code, 1006);
  start = Date.now();
  await assert.rejects(d.publish("live.x", 1), (e) => e.code === "disconnected");
  assert.ok(Date.now() - start < 100, "rejected at once");
  assert.notEqual(d.state, "connected");
});

test("refused connections are retried promptly, and the client connects once a broker listens", async () => {
  // Node 20's WebSocket reports a refused connection with an error event and no close event;
  // the client must not wait for connectTimeout (10 s) to try again.
  const port = await freePort();
  const c = client([`ws://127.0.0.1:${port}/ws`], { minReconnectDelay: 50, maxReconnectDelay: 200 });
  const attempts = collector();
  c.on("reconnecting", attempts.push);
  await attempts.until(4, 3000);
  const b = await ownBroker({ port });
  try {
    await within(3000, c.whenConnected(), "connecting once the broker listens");
  } finally {
    await b.kill();
  }
});

test("the heartbeat notices a stuck broker; the client reconnects and recovers what it missed", async () => {
  const dir = tempDir();
  const b = await startBroker(config(dir), { dir });
  try {
    const c = client([b.ws], { pingInterval: 300, requestTimeout: 300, connectTimeout: 800 });
    const got = collector();
    const subscribed = [];
    const sub = c.subscribe("chat.stuck", { onMessage: got.push, onSubscribed: (i) => subscribed.push(i) });
    await sub.ready;
    for (let n = 1; n <= 3; n++) await apiPublish(b, "chat.stuck", { n });
    await got.until(3);

    const dropped = nextEvent(c, "disconnected");
    await b.pause();
    const info = await within(5000, dropped, "the heartbeat to give up on the stuck broker");
    assert.equal(info.reason, "ping timeout");
    assert.equal(info.willReconnect, true);
    const readyAgain = sub.ready; // a fresh promise, for the re-subscription
    await sleep(200);
    b.resume();
    // Published while the client is between connections: recovery hands them over.
    for (let n = 4; n <= 8; n++) await apiPublish(b, "chat.stuck", { n });
    const again = await within(10000, readyAgain, "the re-subscription");
    assert.equal(again.resubscribed, true);
    assert.equal(again.recovered, true);
    assert.equal(sub.recovered, true);
    for (let n = 9; n <= 10; n++) await apiPublish(b, "chat.stuck", { n });
    await got.until(10);
    await sleep(100); // room for a duplicate to show up
    assert.deepEqual(
      got.items.map((m) => m.data.n),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.deepEqual(
      subscribed.map((i) => [i.resubscribed, i.recovered]),
      [
        [false, null],
        [true, true],
      ],
    );
  } finally {
    b.resume();
    await b.kill();
  }
});

test("after a restart that lost history the re-subscription says recovered: false", async () => {
  const b = await ownBroker();
  const c = client([b.ws]);
  const got = collector();
  const sub = c.subscribe("chat.restart", { onMessage: got.push });
  const first = await sub.ready;
  await c.publish("chat.restart", { n: 1 });
  await got.until(1);
  const before = sub.ready;

  const dropped = nextEvent(c, "disconnected");
  await b.stop(); // SIGTERM: the broker closes its clients with 1001
  assert.equal((await dropped).code, 1001);
  assert.notEqual(sub.ready, before, "a fresh promise for the re-subscription");
  const b2 = await startBroker(config(b.dir), { port: b.port, dir: b.dir });
  try {
    const again = await within(10000, sub.ready, "the re-subscription after the restart");
    assert.equal(again.resubscribed, true);
    assert.equal(again.recovered, false, "the memory backend lost the history: reload");
    assert.notEqual(again.epoch, first.epoch, "a new epoch");
    const ack = await c.publish("chat.restart", { n: 2 });
    assert.equal(ack.offset, 1, "the new epoch starts at 1");
    await got.until(2);
    assert.deepEqual(
      got.items.map((m) => [m.data.n, m.offset]),
      [
        [1, 1],
        [2, 1],
      ],
    );
  } finally {
    await b2.kill();
  }
});

test("close() stops the client: pending work rejects, no reconnect", async () => {
  const b = await ownBroker();
  try {
    const c = client([b.ws], { requestTimeout: 5000 });
    await c.whenConnected();
    const sub = c.subscribe("chat.close");
    await sub.ready;
    await b.pause(); // so the publish below stays pending
    const pending = c.publish("chat.close", 1);
    const gone = nextEvent(c, "disconnected");
    c.close();
    await assert.rejects(pending, (e) => e.code === "closed");
    assert.deepEqual(await gone, { code: 1000, reason: "client closed", willReconnect: false });
    assert.equal(c.state, "closed");
    assert.equal(sub.closed, true);
    await assert.rejects(c.publish("chat.close", 2), (e) => e.code === "closed");
    assert.throws(() => c.subscribe("chat.other"), (e) => e.code === "closed");
    await assert.rejects(c.whenConnected(), (e) => e.code === "closed");
  } finally {
    b.resume();
    await b.kill();
  }
});
