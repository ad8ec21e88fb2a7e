//! A keep-alive HTTP/1.1 client for `POST /api/publish` on hyper's connection API: one
//! connection per publisher and one request at a time on it, which is how an application
//! server would typically call the API (and what this tool measures).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::client::Target;
use crate::Result;

/// Responses larger than this are an error: the API answers a few hundred bytes at most.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub struct HttpClient {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    auth: Option<String>,
}

/// Result of one request: status and body.
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl HttpClient {
    pub async fn connect(target: &Target, api_key: Option<&str>) -> Result<Self> {
        let stream = TcpStream::connect(target.addr).await?;
        // Small requests must not wait for Nagle: latency is what we measure.
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection task drives the socket; it ends when the sender is dropped or the
        // broker closes, and the next request then reports the error.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            authority: target.authority.clone(),
            auth: api_key.map(|k| format!("Bearer {k}")),
        })
    }

    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `GET path` (e.g. `/metrics`).
    pub async fn get(&mut self, path: &str) -> Result<Response> {
        self.request(Method::GET, path, None).await
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        json: Option<&[u8]>,
    ) -> Result<Response> {
        let mut req = Request::builder().method(method).uri(path).header(HOST, &self.authority);
        if json.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(json.unwrap_or_default())))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the HTTP response: {e}"))?
            .to_bytes();
        Ok(Response { status, body })
    }
}

/// Sums the samples of the Prometheus counter `name` (every label set) in a `/metrics` text.
/// `None` when the text has no sample of it.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        // `name value` or `name{labels} value`, not a longer name sharing the prefix.
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums() {
        let text = "# HELP x_total reads\n# TYPE x_total counter\nx_total 3\nx_total_more 9\n\
                    x_total{node=\"a\"} 4\ny_total 1\n";
        assert_eq!(metric_sum(text, "x_total"), Some(7.0));
        assert_eq!(metric_sum(text, "z_total"), None);
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two requests on one connection (keep-alive), the second answered chunked, with the
    /// key sent as a bearer token.
    #[tokio::test]
    async fn posts_twice_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let answers: [&[u8]; 2] = [
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\r\n\
                  15\r\n{\"code\":\"rate_limited\r\n2\r\n\"}\r\n0\r\n\r\n",
            ];
            for answer in answers {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read request");
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                s.write_all(answer).await.expect("answer");
            }
            seen
        });
        let target = Target::parse(&format!("ws://{addr}/ws")).expect("target");
        let mut c = HttpClient::connect(&target, Some("k")).await.expect("connect");
        let r = c.post_json("/api/publish", b"{\"a\":1}").await.expect("first");
        assert_eq!((r.status, &r.body[..]), (200, &b"{}"[..]));
        let r = c.post_json("/api/publish", b"{\"a\":2}").await.expect("second");
        assert_eq!((r.status, error_code(&r).as_str()), (429, "rate_limited"));
        let seen = server.await.expect("server");
        assert!(seen[0].starts_with("POST /api/publish HTTP/1.1\r\n"), "{}", seen[0]);
        assert!(
            seen[0].to_ascii_lowercase().contains("authorization: bearer k\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[1].ends_with("{\"a\":2}"), "{}", seen[1]);
    }
}
