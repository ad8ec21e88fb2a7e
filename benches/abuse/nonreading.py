#!/usr/bin/env python3
"""Clients that subscribe and never read: how much memory the broker holds for them.

Starts a broker (memory backend, default queue bounds), connects CLIENTS subscribers to one
channel that never read, publishes MESSAGES messages of SIZE bytes from one more client, and
reports the broker's RSS before and after, its peak RSS, and how many of the non-reading
clients were closed with 4001 (read from their sockets once publishing is over, and from the
slow-consumer metric). Standard library only; Linux only (RSS comes from /proc).

    cargo build --release
    python3 benches/abuse/nonreading.py --broker target/release/switchyard
"""

import argparse
import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
{queue}

[limits]
publish_rate = 1000000
publish_burst = 1000000

[backends.local]
kind = "memory"

[[routes]]
match = "**"
subscribe = "anyone"
publish = "anyone"
max_message_bytes = 70000
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class Ws:
    """A minimal WebSocket client: masked text frames out, whole frames in."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("closed during the upgrade")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.decode(errors="replace"))

    def send_text(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def read_frame(self):
        """(opcode, payload), or None when the stream ends."""
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, socket.timeout):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < at + n:
            return None
        self.buf = b[at + n :]
        return b[0] & 0x0F, b[at : at + n]


def slow_consumer_metric(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r"^switchyard_slow_consumer_disconnects_total (\S+)$", body, re.M)
    return int(float(m.group(1))) if m else 0


def close_code(ws):
    """Reads until the close frame or the end of the stream; the close code or None."""
    while True:
        frame = ws.read_frame()
        if frame is None:
            return None
        op, payload = frame
        if op == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", required=True, help="path to the switchyard binary")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--size", type=int, default=64 * 1024 - 64, help="bytes of data per message")
    ap.add_argument(
        "--no-byte-bound",
        action="store_true",
        help="leave server.outbound_queue_bytes out (for brokers that predate it)",
    )
    args = ap.parse_args()

    port = free_port()
    queue = "" if args.no_byte_bound else "outbound_queue_bytes = 1048576"
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG.format(port=port, queue=queue))
        config = f.name
    broker = subprocess.Popen(
        [args.broker, "serve", "--config", config],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        subscribers = [Ws(port, "/ws?channel=flood") for _ in range(args.clients)]
        publisher = Ws(port, "/ws")
        publisher.read_frame()  # welcome
        time.sleep(0.5)  # let every subscription land before measuring
        before = rss_kib(broker.pid)
        data = "x" * (args.size - 2)
        started = time.time()
        for i in range(args.messages):
            publisher.send_text(json.dumps({"op": "publish", "channel": "flood", "data": data, "id": i}))
            while True:
                frame = publisher.read_frame()
                if frame is None:
                    sys.exit("the publisher's connection ended")
                reply = json.loads(frame[1])
                if reply.get("id") == i:
                    break
            if reply.get("op") != "ok":
                sys.exit(f"publish {i} was answered {reply}")
        elapsed = time.time() - started
        time.sleep(0.5)  # deliveries still in the hub's hands
        after = rss_kib(broker.pid)
        peak = rss_kib(broker.pid, "VmHWM")
        metric = slow_consumer_metric(port)
        codes = [None] * len(subscribers)

        def drain(i):
            codes[i] = close_code(subscribers[i])

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(subscribers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        counts = {}
        for c in codes:
            counts[c] = counts.get(c, 0) + 1
        mb = args.messages * args.size / 1e6
        print(f"clients={args.clients} messages={args.messages} size={args.size} ({mb:.1f} MB each)")
        print(f"published in {elapsed:.2f} s")
        print(f"broker RSS before: {before / 1024:.1f} MiB")
        print(f"broker RSS after:  {after / 1024:.1f} MiB")
        print(f"broker peak RSS:   {peak / 1024:.1f} MiB")
        print(f"slow-consumer metric: {metric}")
        # None: the stream ended without a close frame. A client that never reads cannot take
        # its 4001 frame within the broker's close grace, so the broker dropped the socket.
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
        print(f"close codes read by the clients afterwards (None = dropped): {shown}")
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        os.unlink(config)


if __name__ == "__main__":
    main()
