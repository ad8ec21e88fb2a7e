//! The demo chat page (`GET /`) and the JavaScript client it imports (`GET /switchyard.js`),
//! built into the binary and served only with `server.demo_page`, so that a newcomer can
//! chat between two browser tabs with nothing but `switchyard serve`.

use std::sync::OnceLock;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::{error, Body};
use crate::protocol::ErrorCode;

const PAGE: &str = include_str!("../../web/demo.html");
/// The client's stable path in the repository; browsers get it at `/switchyard.js`.
const CLIENT: &str = include_str!("../../clients/js/src/index.js");

/// Whether `path` is one of the demo's.
pub(super) fn serves(path: &str) -> bool {
    matches!(path, "/" | "/switchyard.js")
}

/// The answer to `method path` for a path that [`serves`] accepted.
pub(super) fn answer(method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::BadRequest, "method not allowed");
    }
    if path == "/" {
        let mut r = file(PAGE, "text/html; charset=utf-8");
        let h = r.headers_mut();
        if let Ok(csp) = HeaderValue::from_str(content_security_policy()) {
            h.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        r
    } else {
        file(CLIENT, "text/javascript; charset=utf-8")
    }
}

fn file(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated every time: the files change with the binary, and they are small.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// The page may run its own inline scripts (by hash, so an injected script would not run)
/// and scripts from this origin, style itself, and connect to WebSockets (`?ws=` may name
/// another broker); nothing else, and no other site may frame it.
fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hashes: String = inline_scripts(PAGE)
            .iter()
            .map(|s| format!(" 'sha256-{}'", sha256_base64(s)))
            .collect();
        format!(
            "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; \
             connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        )
    })
}

fn sha256_base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

/// The text of every `<script>` element without a `src`, exactly as a browser hashes it
/// for a CSP: everything between the opening tag's `>` and `</script`.
fn inline_scripts(html: &str) -> Vec<&str> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `html`.
    let lower = html.to_ascii_lowercase();
    let mut scripts = Vec::new();
    let mut at = 0;
    while let Some(open) = lower[at..].find("<script").map(|i| at + i) {
        let Some(tag_end) = lower[open..].find('>').map(|i| open + i) else { break };
        let Some(close) = lower[tag_end..].find("</script").map(|i| tag_end + i) else { break };
        let tag = &lower[open..tag_end];
        if !tag.contains(" src=") && !tag.contains("\nsrc=") {
            scripts.push(&html[tag_end + 1..close]);
        }
        at = close;
    }
    scripts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_found_and_external_ones_skipped() {
        let html = "<p>x</p><script src=\"/a.js\"></script>\n<SCRIPT type=\"module\">\nlet a = 1;\n</SCRIPT><script>b()</script >";
        assert_eq!(inline_scripts(html), ["\nlet a = 1;\n", "b()"]);
        assert!(inline_scripts("<script>unclosed").is_empty());
    }

    #[test]
    fn the_policy_names_each_inline_script_of_the_page_by_its_hash() {
        assert_eq!(sha256_base64("alert(1)"), "bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=");
        let csp = content_security_policy();
        let script_src = csp.split(';').find(|d| d.trim().starts_with("script-src"));
        let script_src = script_src.unwrap_or_default();
        for s in inline_scripts(PAGE) {
            assert!(script_src.contains(&format!("'sha256-{}'", sha256_base64(s))), "{csp}");
        }
        assert!(!script_src.contains("unsafe"), "{csp}");
    }
}
