//! The demo chat page and the JavaScript client it imports: served by the built-in default
//! and by files that ask for them, 404 everywhere else, with headers that keep browsers from
//! guessing types or running anything the page does not carry.

mod common;

use common::{http, http_response, TestBroker, OPEN_CONFIG};

const PAGE: &str = include_str!("../web/demo.html");
const CLIENT: &str = include_str!("../clients/js/src/index.js");

/// The built-in default config, as `serve` without `--config` runs it (on a free port).
async fn builtin_broker() -> TestBroker {
    TestBroker::start(switchyard::config::DEFAULT_CONFIG).await
}

#[tokio::test]
async fn the_builtin_default_serves_the_page_and_the_client() {
    let broker = builtin_broker().await;
    let (status, headers, body) = http_response(broker.addr, "GET", "/", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, PAGE);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");
    let csp = headers["content-security-policy"].to_str().expect("ASCII policy");
    let directive = |name: &str| {
        csp.split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {csp}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(directive("default-src"), ["'none'"]);
    assert!(directive("script-src").contains(&"'self'"), "{csp}");
    assert!(!directive("script-src").contains(&"'unsafe-inline'"), "{csp}");
    // The page's inline module script runs because the policy names its hash.
    if let Some((_, rest)) = PAGE.split_once("<script type=\"module\">") {
        use base64::Engine;
        use sha2::Digest;
        let script = rest.split_once("</script>").map_or(rest, |(s, _)| s);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        assert!(directive("script-src").contains(&format!("'sha256-{hash}'").as_str()), "{csp}");
    }
    for want in ["'self'", "ws:", "wss:"] {
        assert!(directive("connect-src").contains(&want), "{csp}");
    }
    assert_eq!(directive("frame-ancestors"), ["'none'"]);

    // The page imports the client from the path it is served at.
    assert!(body.contains("/switchyard.js"), "the page does not import /switchyard.js");
    let (status, headers, body) =
        http_response(broker.addr, "GET", "/switchyard.js", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, CLIENT);
    assert!(body.contains("export class Client"), "{body}");
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");

    // Other methods on the page's paths are 405, like every known path; the API is untouched.
    assert_eq!(http(broker.addr, "POST", "/", &[], "").await.0, 405);
    assert_eq!(http(broker.addr, "GET", "/index.html", &[], "").await.0, 404);
    assert_eq!(http(broker.addr, "GET", "/healthz", &[], "").await.0, 200);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_config_file_serves_no_page_unless_it_asks() {
    let silent = TestBroker::start(OPEN_CONFIG).await;
    let asked = TestBroker::start(common::open_config!("[server]\ndemo_page = true\n")).await;
    let off = TestBroker::start(common::open_config!("[server]\ndemo_page = false\n")).await;
    for path in ["/", "/switchyard.js"] {
        let (status, body) = http(silent.addr, "GET", path, &[], "").await;
        assert_eq!(status, 404, "{path} without demo_page: {body}");
        assert!(body.contains("not_found"), "{body}");
        assert_eq!(http(off.addr, "GET", path, &[], "").await.0, 404, "{path}");
        assert_eq!(http(asked.addr, "GET", path, &[], "").await.0, 200, "{path}");
    }
    for b in [silent, asked, off] {
        b.shutdown().await;
    }
}
