// The demo chat page (web/demo.html) in real headless Chromium, on a real broker: two pages
// chat; the broker is stopped (SIGTERM) and started again on the same port; both pages show
// "reconnecting", refuse to send meanwhile (no hidden buffering), reconnect by themselves and
// carry on. Every message sent by either page is shown on both, none lost, none duplicated.
//
// The memory backend loses history with the restart, so nothing can be published during the
// gap (there is no broker to take it) and the pages are told recovered: false; the test
// asserts what that promises: what was shown before the restart stays, and everything sent
// after both pages reconnected arrives on both, exactly once.
//
// The pages are the broker's own (server.demo_page: GET / and GET /switchyard.js), so the
// test also covers how they are served: the page's Content-Security-Policy must let it load
// the client and open its WebSocket, and the upgrade passes the same-origin Origin check.
//
// Needs Chromium at /usr/bin/chromium (apt-get install chromium) and playwright-core
// (npm ci --prefix clients/js). The screenshot goes to $DEMO_SCREENSHOT (npm run screenshot
// writes docs/demo.png) or, by default, a temporary file.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { startBroker, tempDir } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

async function loadPlaywright() {
  try {
    return await import("playwright-core");
  } catch (e) {
    throw new Error(`playwright-core is not installed: run \`npm ci --prefix clients/js\` (${e.message})`);
  }
}

const BROKER_CONFIG = `
[backends.local]
kind = "memory"

[[routes]]
match = "room.{room}"
subscribe = "anyone"
publish = "anyone"
history_size = 200
presence = true
join_leave = true
`;

/** The demo page on; no allowed_origins, so only the page's own origin may connect. */
const SERVER = "demo_page = true\n";

test("two pages chat through a broker restart without losing or duplicating a message", async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
  const { chromium } = await loadPlaywright();

  const dir = tempDir();
  let broker = await startBroker(BROKER_CONFIG, { dir, extraServer: SERVER });
  cleanup.push(() => broker.kill());
  const site = broker.http;

  // No background networking: this machine has no network beyond loopback, and Chromium's
  // own update and sync checks would only be refused.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  cleanup.push(() => browser.close());

  // One browser context each: separate storage, as two people.
  const open = async (name) => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 620 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    await page.goto(`${site}/?${new URLSearchParams({ room: "lobby", name })}`);
    return { page, errors, name };
  };
  const ada = await open("Ada");
  const bob = await open("Bob");
  const pages = [ada, bob];

  const state = (p) => p.page.locator("#status").getAttribute("data-state");
  const waitState = (p, s) => p.page.waitForSelector(`#status[data-state="${s}"]`, { timeout: 15000 });
  const shown = (p) =>
    p.page.$$eval("#messages li", (lis) => lis.map((li) => `${li.querySelector(".who").textContent}: ${li.querySelector(".text").textContent}`));
  const expected = [];
  /** Types and sends `text` on page `p`, then waits until every page shows `expected`. */
  const say = async (p, text) => {
    await p.page.fill("#text", text);
    await p.page.click("#send");
    expected.push(`${p.name}: ${text}`);
    for (const q of pages) {
      await q.page.waitForFunction((n) => document.querySelectorAll("#messages li").length >= n, expected.length, { timeout: 10000 });
      assert.deepEqual(await shown(q), expected, `${q.name}'s page`);
    }
  };

  for (const p of pages) await waitState(p, "connected");
  await say(ada, "hello, is anyone here?");
  await say(bob, "hi Ada!");
  await say(ada, "the broker is about to restart");

  // Who is online: both pages, from the broker's presence list and its join diffs.
  for (const p of pages) {
    await p.page.waitForFunction(() => document.querySelectorAll("#online li").length === 2, null, { timeout: 10000 });
  }

  // Stop the broker: SIGTERM closes the clients with 1001 and the pages start reconnecting.
  await broker.stop();
  for (const p of pages) await waitState(p, "reconnecting");
  assert.match(await ada.page.textContent("#status"), /reconnecting/);
  // Sending now is refused on the page, not buffered: the text stays to be sent again.
  await ada.page.fill("#text", "sent while the broker is down");
  await ada.page.evaluate(() => document.querySelector("#composer").requestSubmit());
  await ada.page.waitForFunction(() => document.querySelector("#send-error").textContent !== "", null, { timeout: 5000 });
  assert.match(await ada.page.textContent("#send-error"), /Not sent \(disconnected\)/);
  assert.equal(await ada.page.inputValue("#text"), "sent while the broker is down");
  writeFileSync(join(tmpdir(), "switchyard-demo-reconnecting.png"), await ada.page.screenshot());

  broker = await startBroker(BROKER_CONFIG, { dir, port: broker.port, extraServer: SERVER });
  for (const p of pages) await waitState(p, "connected");
  // The memory backend lost the history: the pages say so, and keep what they showed.
  for (const p of pages) {
    await p.page.waitForSelector("#notice.show", { timeout: 10000 });
    assert.match(await p.page.textContent("#notice"), /may have been missed/);
    assert.deepEqual(await shown(p), expected, `${p.name}'s page kept its messages`);
  }

  // Ada sends what was refused; then both carry on.
  await ada.page.click("#send");
  expected.push("Ada: sent while the broker is down");
  for (const q of pages) {
    await q.page.waitForFunction((n) => document.querySelectorAll("#messages li").length >= n, expected.length, { timeout: 10000 });
  }
  await say(bob, "welcome back");
  await say(ada, "nothing lost on my side");
  await say(bob, "nor on mine");
  for (const p of pages) {
    assert.deepEqual(await shown(p), expected, `${p.name}'s page: every message once, in order`);
    assert.equal(await state(p), "connected");
    assert.deepEqual(p.errors, [], `${p.name}'s page threw`);
  }

  const shot = process.env.DEMO_SCREENSHOT ? resolve(process.env.DEMO_SCREENSHOT) : join(tmpdir(), "switchyard-demo.png");
  const png = await ada.page.screenshot();
  assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], "a PNG");
  writeFileSync(shot, png);
  console.log(`screenshot: ${shot}`);
});
