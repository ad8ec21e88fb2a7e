// Two broker nodes on one real redis-server, with history: the client's node is SIGKILLed
// while a publisher on the other node keeps publishing numbered messages; the client
// reconnects to the other node (the next URL), re-subscribes from its last position and ends
// up with every message exactly once, in order.

import { test, after } from "node:test";
import assert from "node:assert/strict";

import { Client } from "../src/index.js";
import { collector, nextEvent, sleep, startBroker, startRedis, within } from "./helpers.mjs";

function nodeConfig(node, redisUrl) {
  return `
[node]
id = "${node}"

[limits]
publish_rate = 100000
publish_burst = 100000

[backends.main]
kind = "redis"
url = "${redisUrl}"

[[routes]]
match = "chat.{room}"
channel = "h:chat:{room}"
subscribe = "anyone"
publish = "anyone"
history_size = 1000
recovery_max = 1000
`;
}

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

test("node A is killed mid-stream: the client carries on on node B with no message lost", async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.kill());
  const a = await startBroker(nodeConfig("a", redis.url));
  cleanup.push(() => a.kill());
  const b = await startBroker(nodeConfig("b", redis.url));
  cleanup.push(() => b.kill());
  await a.waitReady();
  await b.waitReady();

  // random: () => 1 makes the first reconnect wait exactly minReconnectDelay, so messages are
  // certainly published while the client is away and recovery has something to do.
  const c = new Client([a.ws, b.ws], { minReconnectDelay: 300, random: () => 1 });
  cleanup.push(() => c.close());
  const got = collector();
  const subscribed = [];
  const sub = c.subscribe("chat.failover", { onMessage: got.push, onSubscribed: (i) => subscribed.push(i) });
  await within(5000, sub.ready, "subscribing on node a");
  assert.equal(c.node, "a");

  const publisher = new Client([b.ws]);
  cleanup.push(() => publisher.close());
  assert.equal((await publisher.whenConnected()).node, "b");

  const TOTAL = 300;
  let published = 0;
  const publishing = (async () => {
    for (let n = 1; n <= TOTAL; n++) {
      await publisher.publish("chat.failover", { n });
      published = n;
      await sleep(5);
    }
  })();

  await got.until(50);
  const gap = {};
  c.on("disconnected", () => (gap.from ??= published));
  const reconnected = nextEvent(c, "connected", 10000);
  await a.kill(); // SIGKILL: no close frame, the socket just drops
  const info = await reconnected;
  gap.to = published;
  assert.equal(info.node, "b", "the next URL");
  assert.equal(info.url, b.ws);
  const again = await within(5000, sub.ready, "the re-subscription on node b");
  assert.deepEqual([again.resubscribed, again.recovered], [true, true]);

  await within(30000, publishing, "the publisher to finish");
  assert.ok(gap.from < TOTAL, `node a died mid-stream (after ${gap.from} of ${TOTAL})`);
  assert.ok(gap.to > gap.from, `messages were published while the client was away (${gap.from}..${gap.to})`);
  await got.until(TOTAL, 10000);
  await sleep(200); // room for a duplicate to show up
  const expected = Array.from({ length: TOTAL }, (_, i) => i + 1);
  assert.deepEqual(
    got.items.map((m) => m.data.n),
    expected,
  );
  assert.deepEqual(
    got.items.map((m) => m.offset),
    expected,
    "contiguous offsets",
  );
  assert.equal(new Set(got.items.map((m) => m.epoch)).size, 1, "one epoch");
});
