// Presence through the client, against a real broker.
//
// The contract coded against:
//   → {"op":"presence","channel":C,"id":1,"limit":100,"cursor":"…","members":false}
//   ← {"op":"presence","id":1,"channel":C,"connections":N,"users":M,
//      "members":[{"conn":…,"user":…},…],"next_cursor":"…"}   (next_cursor while more remain;
//      with "members":false only the counts)
//   ← {"op":"presence_diff","channel":C,"join":[{"conn":…,"user":…}],"leave":[…]}
//      to subscribers of a route with join_leave = true
// Route keys: presence = true, join_leave = true, presence_ttl_s.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { Client } from "../src/index.js";
import { jwt, nowSeconds, startBroker, tempDir, waitFor } from "./helpers.mjs";

const SECRET = "js-presence-test-secret";
let broker;
const clients = [];

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
subscribe = "anyone"
publish = "anyone"
presence = true
join_leave = true
presence_ttl_s = 30
`,
    { dir },
  );
});

after(async () => {
  for (const c of clients) c.close();
  await broker?.kill();
});

async function member(user, channel, options = {}) {
  const c = new Client([broker.ws], { token: jwt({ sub: user, exp: nowSeconds() + 600 }, SECRET) });
  clients.push(c);
  await c.whenConnected();
  const sub = c.subscribe(channel, options);
  await sub.ready;
  return { client: c, sub, conn: c.conn, user };
}

test("a presence page counts connections and users and lists the members", async () => {
  const a1 = await member("alice", "room.p1");
  const a2 = await member("alice", "room.p1");
  const b = await member("bob", "room.p1");
  const page = await a1.sub.presence({ limit: 100 });
  assert.equal(page.channel, "room.p1");
  assert.equal(page.connections, 3);
  assert.equal(page.users, 2);
  assert.deepEqual(
    page.members.map((m) => `${m.user}@${m.conn}`).sort(),
    [a1, a2, b].map((m) => `${m.user}@${m.conn}`).sort(),
  );
  assert.equal(page.next_cursor, undefined, "one page holds them all");

  const counts = await b.sub.presence({ members: false });
  assert.deepEqual([counts.connections, counts.users, counts.members], [3, 2, undefined]);
});

test("pages follow next_cursor; presenceMembers walks them all", async () => {
  const joined = [];
  for (const user of ["u1", "u2", "u3", "u4", "u5"]) joined.push(await member(user, "room.p2"));
  const first = await joined[0].sub.presence({ limit: 2 });
  assert.equal(first.members.length, 2);
  assert.equal(typeof first.next_cursor, "string");
  const all = [];
  for await (const m of joined[0].sub.presenceMembers({ pageSize: 2 })) all.push(m.conn);
  assert.deepEqual(all.slice().sort(), joined.map((m) => m.conn).sort(), "every member once");
});

test("subscribers get presence_diff frames for joins and leaves", async () => {
  const diffs = [];
  const watcher = await member("watcher", "room.p3", { onPresence: (d) => diffs.push(d) });
  const joiner = await member("joiner", "room.p3");
  const joinedDiff = await waitFor("a join diff", () => diffs.find((d) => (d.join || []).some((m) => m.conn === joiner.conn)));
  assert.equal(joinedDiff.channel, "room.p3");
  assert.deepEqual(
    joinedDiff.join.find((m) => m.conn === joiner.conn),
    { conn: joiner.conn, user: "joiner" },
  );
  await joiner.sub.unsubscribe();
  const leftDiff = await waitFor("a leave diff", () => diffs.find((d) => (d.leave || []).some((m) => m.conn === joiner.conn)));
  assert.equal(leftDiff.channel, "room.p3");
  assert.ok(watcher.sub.closed === false);
});
