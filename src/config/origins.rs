//! `server.allowed_origins`: which web pages may open WebSockets to the broker.
//!
//! Browsers send cookies and HTTP authentication with a cross-site WebSocket handshake, and
//! CORS does not apply to WebSockets: without this check any page a user visits could open a
//! socket to the broker in that user's name (Cross-Site WebSocket Hijacking). The browser
//! names the page's origin in the `Origin` header, which page scripts cannot change. Clients
//! that send no `Origin` (servers, CLIs, mobile apps) are not browsers and are not checked.

use std::fmt;

/// Which `Origin`s may upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// The key is absent: only pages served from the host and port the client connected to
    /// (the `Origin`'s host and port equal the request's `Host`).
    #[default]
    SameOrigin,
    /// `["*"]`: every origin (the check is off).
    Any,
    /// Exactly these; an empty list refuses every browser.
    List(Vec<OriginPattern>),
}

/// One entry: `scheme://host[:port]`, where host may start with `*.` for its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    host: HostPattern,
    /// The port, explicit or the scheme's default; `None` for schemes without one.
    port: Option<u16>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (not `example.com` itself).
    Subdomains(String),
}

/// An origin as a browser serializes it in the `Origin` header (RFC 6454): scheme, host and
/// port, with the scheme's default port left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl AllowedOrigins {
    /// `server.allowed_origins`; on error, the index of the entry at fault and why.
    pub(super) fn parse(entries: &[&str]) -> Result<AllowedOrigins, (usize, String)> {
        if entries.contains(&"*") {
            return Ok(AllowedOrigins::Any);
        }
        let patterns = entries
            .iter()
            .enumerate()
            .map(|(i, e)| OriginPattern::parse(e).map_err(|why| (i, why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedOrigins::List(patterns))
    }

    /// Whether a handshake carrying `Origin: origin` and `Host: host` may upgrade. An origin
    /// that does not parse (including `null`, sent by sandboxed frames and `file:` pages) is
    /// allowed only by `"*"`.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if *self == AllowedOrigins::Any {
            return true;
        }
        let Some(origin) = Origin::parse(origin) else { return false };
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::SameOrigin => host.is_some_and(|h| origin.is_served_by(h)),
            AllowedOrigins::List(patterns) => patterns.iter().any(|p| p.matches(&origin)),
        }
    }
}

impl fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedOrigins::SameOrigin => f.write_str("same origin only"),
            AllowedOrigins::Any => f.write_str("any origin"),
            AllowedOrigins::List(p) => {
                let shown: Vec<&str> = p.iter().map(|p| p.source.as_str()).collect();
                write!(f, "{}", shown.join(", "))
            }
        }
    }
}

/// The port a scheme uses when none is written.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` as written after `scheme://` or in a `Host` header: the host lowercased
/// (IPv6 in brackets) and the port if one is written.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        (format!("[{v6}]"), after)
    } else {
        let end = authority.find(':').unwrap_or(authority.len());
        (authority[..end].to_string(), &authority[end..])
    };
    let port = match port {
        "" => None,
        p => Some(p.strip_prefix(':')?.parse::<u16>().ok().filter(|&p| p != 0)?),
    };
    Some((host.to_ascii_lowercase(), port))
}

/// A DNS name or IPv4 address: dot-separated labels of letters, digits and `-`.
fn valid_host(host: &str) -> bool {
    if host.starts_with('[') {
        return true; // checked by split_authority
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `scheme://rest`, with a valid, lowercased scheme.
fn split_scheme(text: &str) -> Option<(String, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let mut bytes = scheme.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then(|| (scheme.to_ascii_lowercase(), rest))
}

impl Origin {
    /// The `Origin` header's value, or `None` for `null` and anything that is not one.
    pub(crate) fn parse(text: &str) -> Option<Origin> {
        let (scheme, authority) = split_scheme(text.trim())?;
        let (host, port) = split_authority(authority)?;
        if !valid_host(&host) {
            return None;
        }
        let port = port.or_else(|| default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    /// Whether this origin names the host and port of a request's `Host` header. The scheme
    /// is not compared: a TLS proxy in front of the broker makes `https://` pages reach it
    /// over plain HTTP, and the host and port already tell the page's server apart.
    fn is_served_by(&self, host_header: &str) -> bool {
        let Some((host, port)) = split_authority(host_header.trim()) else { return false };
        host == self.host && port.or_else(|| default_port(&self.scheme)) == self.port
    }
}

impl OriginPattern {
    fn parse(text: &str) -> Result<OriginPattern, String> {
        let Some((scheme, authority)) = split_scheme(text) else {
            return Err(format!(
                "{text:?} is not an origin: write scheme://host[:port], like \"https://chat.example.com\" or \"http://127.0.0.1:8080\" (or \"*\" for any origin)"
            ));
        };
        if let Some(i) = authority.find(['/', '?', '#']) {
            return Err(format!(
                "{text:?} has a path; an origin is scheme://host[:port] only: {:?}",
                &text[..text.len() - authority.len() + i]
            ));
        }
        if authority.contains('@') {
            return Err(format!("{text:?} has user info; an origin is scheme://host[:port] only"));
        }
        let Some((host, port)) = split_authority(authority) else {
            return Err(format!("{text:?}: the port must be a number from 1 to 65535"));
        };
        let host = match host.strip_prefix("*.") {
            Some(domain) if domain.contains('.') && valid_host(domain) => {
                HostPattern::Subdomains(domain.to_string())
            }
            Some(_) => {
                return Err(format!(
                    "{text:?}: a wildcard needs a domain of at least two labels after it, like \"https://*.example.com\""
                ))
            }
            None if valid_host(&host) => HostPattern::Exact(host),
            None => {
                return Err(format!(
                    "{text:?}: the host must be a name or address; `*` may only be the whole first label (\"https://*.example.com\")"
                ))
            }
        };
        let port = port.or_else(|| default_port(&scheme));
        Ok(OriginPattern { scheme, host, port, source: text.to_string() })
    }

    fn matches(&self, origin: &Origin) -> bool {
        let host = match &self.host {
            HostPattern::Exact(h) => origin.host == *h,
            HostPattern::Subdomains(domain) => origin
                .host
                .strip_suffix(domain.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        };
        host && origin.scheme == self.scheme && origin.port == self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(entries).unwrap_or_else(|(i, why)| panic!("entry {i}: {why}"))
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let allowed = list(&["https://chat.example.com", "http://127.0.0.1:8080"]);
        for ok in ["https://chat.example.com", "https://CHAT.example.com", "http://127.0.0.1:8080"]
        {
            assert!(allowed.allows(ok, None), "{ok}");
        }
        for refused in [
            "http://chat.example.com",       // another scheme
            "https://chat.example.com:8443", // another port
            "https://evil.example.com",
            "https://chat.example.com.evil.net",
            "http://127.0.0.1:8081",
            "http://localhost:8080", // the same machine, but another origin
            "null",
            "",
            "chat.example.com",
        ] {
            assert!(!allowed.allows(refused, None), "{refused}");
        }
        // A default port written out is the same origin.
        assert!(allowed.allows("https://chat.example.com:443", None));
    }

    #[test]
    fn a_wildcard_matches_subdomains_only() {
        let allowed = list(&["https://*.example.com"]);
        for ok in ["https://a.example.com", "https://a.b.example.com"] {
            assert!(allowed.allows(ok, None), "{ok}");
        }
        for refused in [
            "https://example.com",
            "https://evilexample.com",
            "https://.example.com",
            "http://a.example.com",
            "https://a.example.com:8443",
            "https://a.example.com.evil.net",
        ] {
            assert!(!allowed.allows(refused, None), "{refused}");
        }
    }

    #[test]
    fn without_the_key_only_the_requests_own_host_is_allowed() {
        let same = AllowedOrigins::default();
        assert!(same.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(same.allows("https://chat.example.com", Some("chat.example.com")));
        assert!(same.allows("https://chat.example.com", Some("Chat.Example.com:443")));
        // Behind a TLS proxy the broker sees plain HTTP; the host and port still match.
        assert!(same.allows("https://chat.example.com", Some("chat.example.com:443")));
        assert!(same.allows("http://[::1]:8080", Some("[::1]:8080")));
        for (origin, host) in [
            ("http://evil.example", "127.0.0.1:8080"),
            ("http://127.0.0.1:9999", "127.0.0.1:8080"),
            ("http://localhost:8080", "127.0.0.1:8080"),
            ("https://chat.example.com", "chat.example.com:8443"),
            ("null", "127.0.0.1:8080"),
        ] {
            assert!(!same.allows(origin, Some(host)), "{origin} on {host}");
        }
        assert!(!same.allows("http://127.0.0.1:8080", None), "no Host, no match");
    }

    #[test]
    fn a_star_allows_every_origin_and_an_empty_list_none() {
        assert_eq!(list(&["*"]), AllowedOrigins::Any);
        assert!(list(&["*"]).allows("null", None));
        assert!(!list(&[]).allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
    }

    #[test]
    fn bad_entries_say_what_an_origin_looks_like() {
        for (entry, want) in [
            ("chat.example.com", "write scheme://host[:port]"),
            ("https://chat.example.com/", "has a path"),
            ("https://chat.example.com/app", "\"https://chat.example.com\""),
            ("https://*.com", "at least two labels"),
            ("https://chat.*.com", "`*` may only be the whole first label"),
            ("https://*example.com", "`*` may only be the whole first label"),
            ("http://127.0.0.1:80800", "port must be a number"),
            ("http://127.0.0.1:0", "port must be a number"),
            ("https://user@chat.example.com", "user info"),
            ("https://", "the host must be"),
        ] {
            match AllowedOrigins::parse(&["https://fine.example.com", entry]) {
                Err((1, why)) => assert!(why.contains(want), "{entry}: {why}"),
                other => panic!("{entry}: {other:?}"),
            }
        }
    }
}
