// Test helpers: real `switchyard serve` processes and real `redis-server` processes on free
// loopback ports, each in a temporary directory of its own, so these tests can run next to
// other test suites (and each other) on one machine.
//
// Every wait is bounded and says what it waited for when it gives up.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The broker binary: $SWITCHYARD_BIN, which must exist. No fallback, so no silent skip. */
export function brokerBinary() {
  const bin = process.env.SWITCHYARD_BIN;
  if (!bin) {
    throw new Error(
      "SWITCHYARD_BIN is not set: point it at the broker binary " +
        "(e.g. SWITCHYARD_BIN=target/release/switchyard after `cargo build --release`)",
    );
  }
  if (!existsSync(bin)) throw new Error(`SWITCHYARD_BIN=${bin} does not exist`);
  return bin;
}

// Every process a test file started, killed when the file's process exits however it exits,
// so a failing test never leaves a broker or a Redis behind. The temporary directories (with
// the brokers' logs) are removed after a passing run and kept, and named, after a failing one.
const children = new Set();
const dirs = new Set();
process.on("exit", (code) => {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  if (code === 0 && !process.exitCode) {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  } else if (dirs.size > 0) {
    console.error(`broker configs and logs kept in: ${[...dirs].join(" ")}`);
  }
});

export function tempDir(prefix = "switchyard-js-") {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

/** A port that was free a moment ago (the OS picked it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` until it returns a truthy value (returned), or fails after `timeout` ms. */
export async function waitFor(what, predicate, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${typeof what === "function" ? what() : what}`);
    }
    await sleep(20);
  }
}

/** Resolves with the first `event` the client emits, or fails after `timeout` ms. */
export function nextEvent(client, event, timeout = 10000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeout} ms waiting for the client's "${event}" event`));
    }, timeout);
    const off = client.on(event, (arg) => {
      if (!filter(arg)) return;
      clearTimeout(timer);
      off();
      resolve(arg);
    });
  });
}

/** Rejects if `promise` has not settled within `ms`. */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** An HS256 JWT, signed as the broker verifies it (auth.jwt_hs256_secret_*). */
export function jwt(claims, secret) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const signingInput = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const signature = createHmac("sha256", secret).update(signingInput).digest("base64url");
  return `${signingInput}.${signature}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * `switchyard serve` with `toml` (no [server] table: the listen address is put in front),
 * on `port` or a free one. Resolves once it answers /healthz.
 */
export async function startBroker(toml, { port, dir, extraServer = "" } = {}) {
  const bin = brokerBinary();
  port = port ?? (await freePort());
  dir = dir ?? tempDir();
  const config = join(dir, "switchyard.toml");
  writeFileSync(config, `[server]\nlisten = "127.0.0.1:${port}"\n${extraServer}\n${toml}`);
  const logPath = join(dir, `serve-${port}-${Date.now()}.log`);
  const logFd = openSync(logPath, "w");
  const child = spawn(bin, ["serve", "--config", config], { stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  children.add(child);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      children.delete(child);
      resolve(exited);
    });
  });
  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  const broker = {
    port,
    dir,
    pid: child.pid,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    log,
    /** SIGTERM and wait: clients get 1001. */
    async stop() {
      if (exited) return exited;
      child.kill("SIGTERM");
      return within(15000, exitPromise, `broker on ${port} to exit after SIGTERM`);
    },
    /** SIGKILL and wait: the sockets just drop. */
    async kill() {
      if (exited) return exited;
      child.kill("SIGKILL");
      return exitPromise;
    },
    signal(sig) {
      child.kill(sig);
    },
    /**
     * SIGSTOP, and wait until every thread has stopped: a signal is delivered asynchronously,
     * and a thread still running could answer one more request.
     */
    async pause() {
      child.kill("SIGSTOP");
      await waitFor(`the broker on ${port} to stop`, () => allThreadsStopped(child.pid), 5000);
    },
    /** SIGCONT (harmless when not paused). */
    resume() {
      if (!exited) child.kill("SIGCONT");
    },
    async metric(name) {
      const text = await (await fetch(`${broker.http}/metrics`)).text();
      let sum = 0;
      for (const line of text.split("\n")) {
        if (line.startsWith("#")) continue;
        if (line.startsWith(name + " ") || line.startsWith(name + "{")) sum += Number(line.split(" ").pop());
      }
      return sum;
    },
    async waitReady() {
      await waitFor(`/readyz of the broker on ${port}`, async () => {
        try {
          return (await fetch(`${broker.http}/readyz`)).status === 200;
        } catch {
          return false;
        }
      });
    },
  };
  const deadline = Date.now() + 20000;
  for (;;) {
    if (exited) throw new Error(`switchyard serve exited (${JSON.stringify(exited)}) before answering:\n${log()}`);
    try {
      if ((await fetch(`${broker.http}/healthz`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`switchyard serve not up on ${port} after 20 s:\n${log()}`);
    await sleep(25);
  }
  return broker;
}

/** Whether every thread of `pid` is stopped (state T in /proc/PID/task/TID/stat). */
function allThreadsStopped(pid) {
  try {
    return readdirSync(`/proc/${pid}/task`).every((tid) => {
      // The command name in parentheses may hold spaces; the state follows the last ')'.
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      return stat[stat.lastIndexOf(")") + 2] === "T";
    });
  } catch {
    return false;
  }
}

/** A throwaway redis-server on a free port, no persistence. Fails loudly if it is missing. */
export async function startRedis() {
  const port = await freePort();
  const dir = tempDir("switchyard-js-redis-");
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const spawnError = new Promise((_, reject) =>
    child.on("error", (e) =>
      reject(
        new Error(
          e.code === "ENOENT"
            ? "redis-server is not on PATH: install it (apt-get install redis-server) to run these tests"
            : `redis-server failed to start: ${e.message}`,
        ),
      ),
    ),
  );
  children.add(child);
  child.on("exit", () => children.delete(child));
  const ready = waitFor(`redis-server on ${port} to answer PING`, () => redisPing(port), 10000);
  await Promise.race([ready, spawnError]).catch((e) => {
    throw new Error(`${e.message}\n${output}`);
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async kill() {
      child.kill("SIGKILL");
    },
  };
}

function redisPing(port) {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.setTimeout(500, () => {
      socket.destroy();
      resolve(false);
    });
    socket.on("error", () => resolve(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (d) => {
      data += d;
      if (data.includes("\r\n")) {
        socket.end();
        resolve(data.startsWith("+PONG"));
      }
    });
  });
}

/** Collects what a subscription delivers; `until(n)` waits for the n-th. */
export function collector() {
  const items = [];
  return {
    items,
    push: (x) => items.push(x),
    until: (n, timeout = 10000) =>
      waitFor(() => `${n} items (have ${items.length}: ${JSON.stringify(items).slice(0, 300)})`, () => items.length >= n, timeout),
  };
}
