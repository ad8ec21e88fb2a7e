//! Identity: JWT verification for WebSocket clients and API keys for the HTTP API.
//!
//! A token's `sub` becomes the connection's user, the only source of the `user` field that
//! subscribers see. HS256 takes its secret from an environment variable or a file of its own
//! (a mounted Kubernetes or Docker secret; never the config file, which is often committed);
//! RS256/ES256 take a PEM public key file. API keys come the same two ways.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;

/// Who a connection is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The token's `sub`; `None` for anonymous clients.
    pub user: Option<Arc<str>>,
    /// When the token expires; the connection is closed with 4003 then.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    pub(crate) fn anonymous() -> Identity {
        Identity::default()
    }
}

/// Why auth could not be set up from the config (reported at start and on reload).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.jwt_hs256_secret_env: environment variable {0} is not set or empty")]
    MissingSecret(String),
    #[error("auth.api_keys_env: environment variable {0} is not set or holds no key")]
    MissingApiKeys(String),
    #[error("auth.{key}: cannot read {file}: {source}")]
    SecretFile { key: &'static str, file: String, source: std::io::Error },
    #[error("auth.{key}: {file} holds no secret")]
    EmptySecretFile { key: &'static str, file: String },
    #[error("auth: cannot read public key file {file}: {source}")]
    KeyFile { file: String, source: std::io::Error },
    #[error("auth: public key file {file} is not a valid PEM key: {source}")]
    BadKey { file: String, source: jsonwebtoken::errors::Error },
}

/// Why a token was refused, in words a client author can act on (the 401 body and the log).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("this broker has no JWT verification configured; connect without a token")]
    NotAccepted,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error(
        "token signature does not verify: it was signed with another secret or key than this \
         broker's, or changed after signing"
    )]
    BadSignature,
    #[error("token is signed with {got}, but this broker accepts {want} tokens only")]
    WrongAlgorithm { got: String, want: String },
    #[error("{}", when::expired(*exp))]
    Expired { exp: Option<u64> },
    #[error("{}", when::not_yet_valid(*nbf))]
    NotYetValid { nbf: Option<u64> },
    #[error("token issuer (`iss`) is {got}, but this broker accepts {want:?} only")]
    WrongIssuer { got: String, want: String },
    #[error("token audience (`aud`) is {got}, but this broker accepts {want:?} only")]
    WrongAudience { got: String, want: String },
    #[error("token has no `{0}` claim, which this broker requires")]
    MissingClaim(String),
    #[error("token claim `{0}` must be a number of seconds since 1970-01-01T00:00:00Z")]
    BadClaim(String),
    #[error("token is invalid: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Claims {
    // Optional here so a token without it is refused by the validation, which names it.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

/// Verifies client tokens.
pub(crate) struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    /// Builds the verifier the config asks for; `None` when JWT is not configured.
    pub(crate) fn from_config(cfg: &AuthConfig) -> Result<Option<Authenticator>, AuthSetupError> {
        let (key, algorithm) = if let Some(var) = &cfg.jwt_hs256_secret_env {
            let secret = std::env::var(var).unwrap_or_default();
            if secret.is_empty() {
                return Err(AuthSetupError::MissingSecret(var.clone()));
            }
            return Ok(Some(Authenticator::hs256(secret.as_bytes(), cfg)));
        } else if let Some(file) = &cfg.jwt_hs256_secret_file {
            let secret = read_secret_file("jwt_hs256_secret_file", file)?;
            return Ok(Some(Authenticator::hs256(secret.as_bytes(), cfg)));
        } else if let Some(file) = &cfg.jwt_rs256_public_key_file {
            let pem = read_key(file)?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .map_err(|source| AuthSetupError::BadKey { file: file.clone(), source })?;
            (key, Algorithm::RS256)
        } else if let Some(file) = &cfg.jwt_es256_public_key_file {
            let pem = read_key(file)?;
            let key = DecodingKey::from_ec_pem(&pem)
                .map_err(|source| AuthSetupError::BadKey { file: file.clone(), source })?;
            (key, Algorithm::ES256)
        } else {
            return Ok(None);
        };
        Ok(Some(Authenticator::new(key, algorithm, cfg)))
    }

    /// An HS256 verifier with `secret` (the config's issuer and audience apply).
    pub(crate) fn hs256(secret: &[u8], cfg: &AuthConfig) -> Authenticator {
        Authenticator::new(DecodingKey::from_secret(secret), Algorithm::HS256, cfg)
    }

    fn new(key: DecodingKey, algorithm: Algorithm, cfg: &AuthConfig) -> Authenticator {
        let mut validation = Validation::new(algorithm);
        // Tokens without `exp` are accepted (long-lived service tokens); with it, it is enforced
        // to the second, both at connect and mid-connection. `nbf` gets the same (zero) leeway:
        // a token minted for later must not open a connection now.
        validation.required_spec_claims = ["sub".to_string()].into_iter().collect();
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        if let Some(iss) = &cfg.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        match &cfg.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Authenticator { key, validation }
    }

    pub(crate) fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| self.explain(token, &e))?;
        let Some(sub) = data.claims.sub else {
            return Err(TokenError::MissingClaim("sub".into()));
        };
        if sub.is_empty() {
            return Err(TokenError::Invalid("`sub` (the user id) is empty".into()));
        }
        let expires_at = data.claims.exp.map(|exp| UNIX_EPOCH + Duration::from_secs(exp));
        if expires_at.is_some_and(|t| t <= SystemTime::now()) {
            return Err(TokenError::Expired { exp: data.claims.exp });
        }
        Ok(Identity { user: Some(Arc::from(sub)), expires_at })
    }

    /// What is wrong with `token`, from jsonwebtoken's error kind and, for a claim that failed
    /// its check, the claim itself. Claims are checked only after the signature verified, so
    /// what is quoted from them was written by the key's holder.
    fn explain(&self, token: &str, e: &jsonwebtoken::errors::Error) -> TokenError {
        use jsonwebtoken::errors::ErrorKind;
        let claims =
            || jsonwebtoken::dangerous::insecure_decode::<SeenClaims>(token).map(|d| d.claims).ok();
        let want = |v: &Option<std::collections::HashSet<String>>| {
            let mut v: Vec<&str> = v.iter().flatten().map(String::as_str).collect();
            v.sort_unstable();
            v.join(", ")
        };
        match e.kind() {
            ErrorKind::InvalidToken => TokenError::Malformed(
                "a JWT is three base64url parts separated by dots (header.claims.signature)".into(),
            ),
            ErrorKind::Base64(_) => TokenError::Malformed("a part is not valid base64url".into()),
            ErrorKind::Utf8(_) => TokenError::Malformed("a part is not UTF-8".into()),
            ErrorKind::Json(j) => TokenError::Malformed(format!(
                "its header or claims are not the JSON a JWT holds: {j}"
            )),
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm {
                got: jsonwebtoken::decode_header(token)
                    .map_or_else(|_| "an unknown algorithm".into(), |h| format!("{:?}", h.alg)),
                want: self.algorithm(),
            },
            ErrorKind::ExpiredSignature => {
                TokenError::Expired { exp: claims().and_then(|c| c.exp) }
            }
            ErrorKind::ImmatureSignature => {
                TokenError::NotYetValid { nbf: claims().and_then(|c| c.nbf) }
            }
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer {
                got: quoted(claims().and_then(|c| c.iss)),
                want: want(&self.validation.iss),
            },
            ErrorKind::InvalidAudience => TokenError::WrongAudience {
                got: quoted(claims().and_then(|c| c.aud)),
                want: want(&self.validation.aud),
            },
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            ErrorKind::InvalidClaimFormat(c) => TokenError::BadClaim(c.clone()),
            _ => TokenError::Invalid(e.to_string()),
        }
    }

    /// The one algorithm this verifier accepts.
    fn algorithm(&self) -> String {
        self.validation.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
    }
}

/// The claims an error message quotes, whatever their shape.
#[derive(Deserialize)]
struct SeenClaims {
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

/// A claim's value as JSON, cut short so a message stays one line; "missing" when absent.
fn quoted(v: Option<serde_json::Value>) -> String {
    let Some(v) = v else { return "missing".into() };
    let text = v.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Token times as people read them: an RFC 3339 instant and how far from now.
mod when {
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    pub(super) fn expired(exp: Option<u64>) -> String {
        match exp {
            Some(exp) => format!(
                "token expired at {} ({} ago): get a fresh one",
                rfc3339(exp),
                span(now().saturating_sub(exp))
            ),
            None => "token expired: get a fresh one".into(),
        }
    }

    pub(super) fn not_yet_valid(nbf: Option<u64>) -> String {
        match nbf {
            Some(nbf) => format!(
                "token not valid yet: its `nbf` (not before) is {}, in {}; is the issuer's clock ahead?",
                rfc3339(nbf),
                span(nbf.saturating_sub(now()))
            ),
            None => "token not valid yet: its `nbf` (not before) is in the future".into(),
        }
    }

    /// `secs` as "42 s", "7 min", "5 h" or "3 days" (rounded down).
    pub(super) fn span(secs: u64) -> String {
        match secs {
            0..120 => format!("{secs} s"),
            120..7200 => format!("{} min", secs / 60),
            7200..172_800 => format!("{} h", secs / 3600),
            _ => format!("{} days", secs / 86_400),
        }
    }

    /// Seconds since 1970 as `2026-11-30T20:48:21Z` (UTC).
    pub(super) fn rfc3339(secs: u64) -> String {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// The contents of a secret file without its trailing line break (editors and `echo` add one;
/// no secret ends in one). Read at every start and reload, so a rotated secret is picked up.
fn read_secret_file(key: &'static str, file: &str) -> Result<String, AuthSetupError> {
    let text = std::fs::read_to_string(file).map_err(|source| AuthSetupError::SecretFile {
        key,
        file: file.to_string(),
        source,
    })?;
    let secret =
        text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if secret.is_empty() {
        return Err(AuthSetupError::EmptySecretFile { key, file: file.to_string() });
    }
    Ok(secret.to_string())
}

fn read_key(file: &str) -> Result<Vec<u8>, AuthSetupError> {
    std::fs::read(file).map_err(|source| AuthSetupError::KeyFile { file: file.to_string(), source })
}

/// Keys that authorize `/api/*` requests.
#[derive(Default)]
pub(crate) struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl ApiKeys {
    /// Reads comma-separated keys from the env var or the file the config names; none
    /// configured: the API refuses every request.
    pub(crate) fn from_config(cfg: &AuthConfig) -> Result<ApiKeys, AuthSetupError> {
        if let Some(file) = &cfg.api_keys_file {
            let keys = ApiKeys::parse(&read_secret_file("api_keys_file", file)?);
            if keys.keys.is_empty() {
                return Err(AuthSetupError::EmptySecretFile {
                    key: "api_keys_file",
                    file: file.clone(),
                });
            }
            return Ok(keys);
        }
        let Some(var) = &cfg.api_keys_env else {
            return Ok(ApiKeys::default());
        };
        let keys = ApiKeys::parse(&std::env::var(var).unwrap_or_default());
        if keys.keys.is_empty() {
            return Err(AuthSetupError::MissingApiKeys(var.clone()));
        }
        Ok(keys)
    }

    /// Comma-separated keys; blanks around and between them are ignored.
    fn parse(raw: &str) -> ApiKeys {
        let keys = raw
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().to_vec())
            .collect();
        ApiKeys { keys }
    }

    pub(crate) fn is_configured(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether `presented` is one of the keys, compared in constant time per key so the
    /// comparison does not leak how much of a key matched.
    pub(crate) fn accepts(&self, presented: &str) -> bool {
        let p = presented.as_bytes();
        self.keys.iter().fold(false, |found, k| found | constant_time_eq(k, p))
    }
}

/// Equal contents in time that does not depend on where they differ (lengths are not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .expect("encode")
    }

    #[test]
    fn verifies_sub_and_expiry() {
        let auth = Authenticator::hs256(b"s3cret", &AuthConfig::default());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let id = auth
            .verify(&token("s3cret", serde_json::json!({"sub":"alice","exp": now + 60})))
            .expect("valid");
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert!(id.expires_at.is_some());
        let no_exp =
            auth.verify(&token("s3cret", serde_json::json!({"sub":"bob"}))).expect("valid");
        assert_eq!(no_exp.expires_at, None);
        assert!(matches!(
            auth.verify(&token("s3cret", serde_json::json!({"sub":"a","exp": now - 1}))),
            Err(TokenError::Expired { exp: Some(e) }) if e == now - 1
        ));
        assert!(matches!(
            auth.verify(&token("other", serde_json::json!({"sub":"a"}))),
            Err(TokenError::BadSignature)
        ));
        assert!(matches!(
            auth.verify(&token("s3cret", serde_json::json!({"x":1}))),
            Err(TokenError::MissingClaim(c)) if c == "sub"
        ));
        assert!(matches!(auth.verify("garbage"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn not_before_is_enforced() {
        let auth = Authenticator::hs256(b"s3cret", &AuthConfig::default());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        assert!(matches!(
            auth.verify(&token("s3cret", serde_json::json!({"sub":"a","nbf": now + 30}))),
            Err(TokenError::NotYetValid { nbf: Some(n) }) if n == now + 30
        ));
        let ok = auth.verify(&token("s3cret", serde_json::json!({"sub":"a","nbf": now - 1})));
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// The message a refused token gets.
    fn refusal(auth: &Authenticator, token: &str) -> String {
        match auth.verify(token) {
            Err(e) => e.to_string(),
            Ok(id) => panic!("{token} was accepted as {id:?}"),
        }
    }

    #[test]
    fn every_refusal_says_what_is_wrong() {
        let cfg = AuthConfig {
            jwt_issuer: Some("https://id.example.com".into()),
            jwt_audience: Some("chat".into()),
            ..AuthConfig::default()
        };
        let auth = Authenticator::hs256(b"s3cret", &cfg);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let good = serde_json::json!({"sub":"a","iss":"https://id.example.com","aud":"chat"});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            token("s3cret", c)
        };
        assert!(auth.verify(&token("s3cret", good.clone())).is_ok());
        let cases = [
            ("garbage".to_string(), "token is malformed: a JWT is three base64url parts"),
            ("a.b!.c".to_string(), "token is malformed: a part is not valid base64url"),
            ("e30.e30.e30".to_string(), "token is malformed: its header or claims are not the JSON"),
            (token("other", good.clone()), "token signature does not verify"),
            (with("exp", (now - 150).into()), " (2 min ago): get a fresh one"),
            (with("nbf", (now + 7200).into()), "token not valid yet: its `nbf` (not before) is "),
            (with("iss", "https://evil.example".into()),
                "token issuer (`iss`) is \"https://evil.example\", but this broker accepts \"https://id.example.com\" only"),
            (with("aud", serde_json::json!(["web", "app"])),
                "token audience (`aud`) is [\"web\",\"app\"], but this broker accepts \"chat\" only"),
            (token("s3cret", serde_json::json!({"iss":"https://id.example.com","aud":"chat"})),
                "token has no `sub` claim"),
            (with("sub", "".into()), "token is invalid: `sub` (the user id) is empty"),
        ];
        for (t, want) in cases {
            let got = refusal(&auth, &t);
            assert!(got.contains(want), "{t}: wanted {want:?} in {got:?}");
        }
        let expired = refusal(&auth, &with("exp", 1_796_070_501u64.into()));
        assert!(expired.starts_with("token expired at 2026-11-30T20:28:21Z ("), "{expired}");
        let hs384 = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS384),
            &good,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("encode");
        assert_eq!(
            refusal(&auth, &hs384),
            "token is signed with HS384, but this broker accepts HS256 tokens only"
        );
    }

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(when::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(when::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(when::rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        let spans: Vec<String> = [0, 119, 120, 7199, 7200, 172_800].map(when::span).into();
        assert_eq!(spans, ["0 s", "119 s", "2 min", "119 min", "2 h", "2 days"]);
    }

    #[test]
    fn missing_secret_is_a_setup_error() {
        let r = Authenticator::from_config(&AuthConfig {
            jwt_hs256_secret_env: Some("SWITCHYARD_TEST_SURELY_UNSET".into()),
            ..AuthConfig::default()
        });
        assert!(matches!(r, Err(AuthSetupError::MissingSecret(_))));
    }

    #[test]
    fn secrets_and_keys_are_read_from_files_without_the_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("jwt");
        std::fs::write(&secret, "s3cret\n").expect("write secret");
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "k1, key-two\r\n").expect("write keys");
        let cfg = AuthConfig {
            jwt_hs256_secret_file: Some(secret.display().to_string()),
            api_keys_file: Some(keys.display().to_string()),
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&cfg).expect("setup").expect("JWT configured");
        let id = auth.verify(&token("s3cret", serde_json::json!({"sub":"a"}))).expect("valid");
        assert_eq!(id.user.as_deref(), Some("a"));
        let api = ApiKeys::from_config(&cfg).expect("keys");
        assert!(api.accepts("k1") && api.accepts("key-two") && !api.accepts("key-two\r"));
    }

    #[test]
    fn a_missing_or_empty_secret_file_names_the_key_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope").display().to_string();
        let cfg = AuthConfig { jwt_hs256_secret_file: Some(missing.clone()), ..Default::default() };
        let e = Authenticator::from_config(&cfg).err().expect("missing file").to_string();
        assert!(
            e.starts_with(&format!("auth.jwt_hs256_secret_file: cannot read {missing}: ")),
            "{e}"
        );
        let cfg = AuthConfig { api_keys_file: Some(missing.clone()), ..Default::default() };
        let e = ApiKeys::from_config(&cfg).err().expect("missing file").to_string();
        assert!(e.starts_with(&format!("auth.api_keys_file: cannot read {missing}: ")), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " ,\n").expect("write");
        let cfg =
            AuthConfig { api_keys_file: Some(empty.display().to_string()), ..Default::default() };
        let e = ApiKeys::from_config(&cfg).err().expect("no key").to_string();
        assert_eq!(e, format!("auth.api_keys_file: {} holds no secret", empty.display()));
    }

    #[test]
    fn api_keys_compare_whole_keys() {
        let keys = ApiKeys { keys: vec![b"k1".to_vec(), b"key-two".to_vec()] };
        assert!(keys.accepts("k1"));
        assert!(keys.accepts("key-two"));
        assert!(!keys.accepts("k"));
        assert!(!keys.accepts("key-twO"));
        assert!(!ApiKeys::default().accepts(""));
    }
}
