//! A minimal HTTP/1.1 keep-alive client for `POST /api/publish`: one request at a time per
//! connection, which is how an application server would typically call it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::Target;
use crate::Result;

pub struct HttpClient {
    stream: TcpStream,
    authority: String,
    auth: Option<String>,
    buf: Vec<u8>,
}

/// Result of one request: status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpClient {
    pub async fn connect(target: &Target, api_key: Option<&str>) -> Result<Self> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            authority: target.authority.clone(),
            auth: api_key.map(|k| format!("Authorization: Bearer {k}\r\n")),
            buf: Vec::with_capacity(4096),
        })
    }

    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{}\r\n",
            self.authority,
            body.len(),
            self.auth.as_deref().unwrap_or("")
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<Response> {
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?.to_string();
        let status: u16 = head
            .split_ascii_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("malformed HTTP status line")?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let body = if let Some(len) = header("content-length") {
            let len: usize = len.parse()?;
            while self.buf.len() < head_end + len {
                self.read_more().await?;
            }
            let body = self.buf[head_end..head_end + len].to_vec();
            self.buf.drain(..head_end + len);
            body
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.buf.drain(..head_end);
            self.read_chunked().await?
        } else {
            return Err("HTTP response without a length".into());
        };
        Ok(Response { status, body })
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = memchr::memmem::find(&self.buf, b"\r\n") {
                    break i;
                }
                self.read_more().await?;
            };
            let size_str = std::str::from_utf8(&self.buf[..line_end])?;
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)?;
            while self.buf.len() < line_end + 2 + size + 2 {
                self.read_more().await?;
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("HTTP connection closed".into());
        }
        if self.buf.len() + n > 1 << 20 {
            return Err("HTTP response too large".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The `code` field of an error body, or the status when there is none.
pub fn error_code(resp: &Response) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        code: Option<String>,
    }
    serde_json::from_slice::<Body>(&resp.body)
        .ok()
        .and_then(|b| b.code)
        .unwrap_or_else(|| format!("http_{}", resp.status))
}
