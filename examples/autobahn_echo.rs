//! A WebSocket echo server for Autobahn|Testsuite (`tests/autobahn/run.sh`), built on the
//! broker's own framing: the same [`FrameReader`] that parses client frames in sessions, and
//! the same frame writers. Text and binary messages come back as they were received (one
//! frame each), pings get their pong, close frames are answered and the connection ends.
//!
//!     cargo run --release --example autobahn_echo -- [ADDR]     (default 127.0.0.1:9001)
//!
//! Prints `listening on ADDR` once bound, so a script can start it on port 0.

use bytes::BytesMut;
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use switchyard::protocol::wire::{self, FrameReader, Received};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Cases 9.* send messages of up to 16 MiB.
const MAX_MESSAGE: usize = 64 << 20;
/// What one read may add to the buffer.
const READ_CHUNK: usize = 64 << 10;
/// The longest upgrade request read.
const MAX_REQUEST: usize = 16 << 10;
/// How long a closed connection is drained before it is dropped.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = serve(stream).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let Some(head_len) = read_request(&mut stream, &mut buf).await? else {
        return Ok(());
    };
    let head = buf.split_to(head_len);
    let Some(accept) = accept_key(&head) else {
        let refusal = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return stream.write_all(refusal.as_bytes()).await;
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    echo(&mut stream, buf).await
}

/// Reads the upgrade request into `buf`; the length of its head, or `None` when the peer left
/// or sent more than [`MAX_REQUEST`] without ending it.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// `Sec-WebSocket-Accept` for a request that carries a well-formed `Sec-WebSocket-Key`.
fn accept_key(head: &[u8]) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    let key = head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim())
    })?;
    wire::valid_key(key.as_bytes()).then(|| derive_accept_key(key.as_bytes()))
}

/// Echoes until the client closes, breaks the protocol or goes away.
async fn echo(stream: &mut TcpStream, mut buf: BytesMut) -> std::io::Result<()> {
    let mut reader = FrameReader::new(MAX_MESSAGE);
    let mut out = Vec::new();
    loop {
        let open = answer(&mut reader, &mut buf, &mut out);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out = Vec::new();
        }
        if !open {
            finish_close(stream).await;
            return Ok(());
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Appends the answers to every complete frame in `buf` to `out`; false once a close frame
/// has been written.
fn answer(reader: &mut FrameReader, buf: &mut BytesMut, out: &mut Vec<u8>) -> bool {
    loop {
        match reader.next(buf) {
            Ok(None) => return true,
            Ok(Some(Received::Text(text))) => {
                wire::put_header(out, wire::OP_TEXT, text.len());
                out.extend_from_slice(&text);
            }
            Ok(Some(Received::Binary(data))) => {
                wire::put_header(out, wire::OP_BINARY, data.len());
                out.extend_from_slice(&data);
            }
            Ok(Some(Received::Ping(payload))) => {
                out.extend_from_slice(&wire::control_frame(wire::OP_PONG, &payload));
            }
            Ok(Some(Received::Pong)) => {}
            Ok(Some(Received::Close(code))) => {
                let close = match code {
                    Some(code) => wire::close_frame(code, ""),
                    None => wire::control_frame(wire::OP_CLOSE, b""),
                };
                out.extend_from_slice(&close);
                return false;
            }
            Err(e) => {
                out.extend_from_slice(&wire::close_frame(e.close_code(), &e.reason()));
                return false;
            }
        }
    }
}

/// The server closes the TCP connection first (RFC 6455 §7.1.1); reading until the client's
/// end keeps unread bytes from turning the close into a reset that loses the close frame.
async fn finish_close(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; READ_CHUNK];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
