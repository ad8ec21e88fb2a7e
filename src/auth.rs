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

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("this broker has no JWT verification configured; connect without a token")]
    NotAccepted,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet: its `nbf` (not before) is in the future")]
    NotYetValid,
    #[error("token is invalid: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
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
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid(e.to_string()),
            },
        )?;
        if data.claims.sub.is_empty() {
            return Err(TokenError::Invalid("`sub` is empty".into()));
        }
        let expires_at = data.claims.exp.map(|exp| UNIX_EPOCH + Duration::from_secs(exp));
        if expires_at.is_some_and(|t| t <= SystemTime::now()) {
            return Err(TokenError::Expired);
        }
        Ok(Identity { user: Some(Arc::from(data.claims.sub)), expires_at })
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
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            auth.verify(&token("other", serde_json::json!({"sub":"a"}))),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            auth.verify(&token("s3cret", serde_json::json!({"x":1}))),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(auth.verify("garbage"), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn not_before_is_enforced() {
        let auth = Authenticator::hs256(b"s3cret", &AuthConfig::default());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        assert!(matches!(
            auth.verify(&token("s3cret", serde_json::json!({"sub":"a","nbf": now + 30}))),
            Err(TokenError::NotYetValid)
        ));
        let ok = auth.verify(&token("s3cret", serde_json::json!({"sub":"a","nbf": now - 1})));
        assert!(ok.is_ok(), "{ok:?}");
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
