// Tokens against a real broker verifying HS256 JWTs: a token expiring mid-connection (the
// broker closes with 4003) is renewed through getToken, and the client reconnects and
// re-subscribes with recovery; without getToken it stops instead of looping; a token already
// expired is renewed (or refused) before any connection is attempted.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { Client, SwitchyardError } from "../src/index.js";
import { collector, jwt, nextEvent, nowSeconds, sleep, startBroker, tempDir, within } from "./helpers.mjs";

const SECRET = "js-client-test-secret";

let broker;
const clients = [];

function client(options) {
  const c = new Client([broker.ws], { minReconnectDelay: 100, ...options });
  clients.push(c);
  return c;
}

before(async () => {
  const dir = tempDir();
  const secretFile = join(dir, "jwt");
  writeFileSync(secretFile, `${SECRET}\n`);
  broker = await startBroker(
    `
[auth]
jwt_hs256_secret_file = ${JSON.stringify(secretFile)}

[backends.local]
kind = "memory"

[[routes]]
match = "room.{room}"
subscribe = "authenticated"
publish = "authenticated"
history_size = 100
`,
    { dir },
  );
});

after(async () => {
  for (const c of clients) c.close();
  await broker?.kill();
});

const token = (sub, ttl) => jwt({ sub, exp: nowSeconds() + ttl }, SECRET);

test("a token expiring mid-connection is renewed with getToken; the client re-subscribes and recovers", async () => {
  const issued = [];
  const c = client({
    token: token("alice", 2),
    getToken: async () => {
      const t = token("alice", 600);
      issued.push(t);
      return t;
    },
  });
  const got = collector();
  const subscribed = [];
  const sub = c.subscribe("room.auth", { onMessage: got.push, onSubscribed: (i) => subscribed.push(i) });
  const first = await within(5000, sub.ready, "the first subscription");
  const conn1 = c.conn;
  await c.publish("room.auth", { n: 1 });
  await got.until(1);
  assert.equal(got.items[0].user, "alice", "the broker verified the first token");

  const publisher = client({ token: token("bob", 600) });
  await publisher.whenConnected();

  const dropped = await within(6000, nextEvent(c, "disconnected", 6000), "the broker to close the expired connection");
  assert.deepEqual([dropped.code, dropped.willReconnect], [4003, true]);
  // Published while alice is between connections: her recovery must bring it.
  await publisher.publish("room.auth", { n: 2 });
  const again = await within(5000, sub.ready, "the re-subscription with the renewed token");
  assert.equal(issued.length, 1, "getToken was called once, for the reconnect");
  assert.notEqual(c.conn, conn1, "a new connection");
  assert.deepEqual([again.resubscribed, again.recovered, again.epoch], [true, true, first.epoch]);
  await c.publish("room.auth", { n: 3 });
  await got.until(3);
  assert.deepEqual(
    got.items.map((m) => [m.data.n, m.user]),
    [
      [1, "alice"],
      [2, "bob"],
      [3, "alice"],
    ],
  );
  assert.equal(subscribed.length, 2);
});

test("without getToken an expired token stops the client instead of looping", async () => {
  const before = await broker.metric("switchyard_connections_total");
  const c = client({ token: token("carol", 2) });
  const errors = collector();
  c.on("error", errors.push);
  await c.whenConnected();
  const stopped = await within(6000, nextEvent(c, "disconnected", 6000), "the 4003 close");
  assert.deepEqual([stopped.code, stopped.willReconnect], [4003, false]);
  assert.equal(stopped.error.code, "token_expired");
  assert.ok(errors.items.some((e) => e instanceof SwitchyardError && e.code === "token_expired"));
  assert.equal(c.state, "closed");
  await sleep(1000); // with a 100 ms backoff, a retry would have shown within this
  assert.equal(await broker.metric("switchyard_connections_total"), before + 1, "no second connection");
});

test("an already expired token is renewed before connecting, or stops the client at once", async () => {
  const refused = await broker.metric("switchyard_connections_refused_total");
  let calls = 0;
  const renewed = client({
    token: token("dave", -10),
    getToken: async () => {
      calls++;
      return token("dave", 600);
    },
  });
  await within(5000, renewed.whenConnected(), "connecting with the renewed token");
  assert.equal(calls, 1);
  const sub = renewed.subscribe("room.dave");
  await sub.ready; // an authenticated route: the renewed token is in use

  const stuck = client({ token: token("erin", -10) });
  await assert.rejects(stuck.whenConnected(), (e) => e.code === "token_expired");
  assert.equal(stuck.state, "closed");
  assert.equal(await broker.metric("switchyard_connections_refused_total"), refused, "no attempt was refused with 401");
});

test("an anonymous client is refused an authenticated route with forbidden", async () => {
  const c = client({});
  await c.whenConnected();
  await assert.rejects(c.subscribe("room.anon").ready, (e) => e.code === "forbidden");
  await assert.rejects(c.publish("room.anon", 1), (e) => e.code === "forbidden");
});
