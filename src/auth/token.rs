//! Access tokens: JWTs checked with `jsonwebtoken` against an HS256 secret, a public key
//! (RS256 or EdDSA), or both. A token must carry `exp` (and may carry `nbf`), and a
//! `blobcast` claim saying what it allows: `{"publish":["cam1"],"watch":["class-*"],
//! "admin":false}`, where a stream pattern is an exact name, `prefix*`, or `*`.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Clock difference tolerated between the token's issuer and this server, on `exp`
/// and `nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is empty: a token secret needs at least 32 bytes")]
    EmptySecret(String),
    #[error("{0} holds neither an RSA nor an Ed25519 public key in PEM")]
    NotAPublicKey(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Why a token was not accepted: each is a 401, with this text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired; get a fresh one")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's signature does not match this server's key")]
    BadSignature,
    #[error("the token has no exp (expiry) claim")]
    NoExpiry,
    #[error("the token is signed with {0:?}, which this server has no key for")]
    UnknownAlgorithm(Algorithm),
    #[error("the token is not a valid JWT with a blobcast claim")]
    Malformed,
}

/// What a token allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub watch: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

impl Permissions {
    pub fn may_publish(&self, stream: &str) -> bool {
        self.publish.iter().any(|p| pattern_matches(p, stream))
    }

    /// An admin sees every stream, so it may watch every stream.
    pub fn may_watch(&self, stream: &str) -> bool {
        self.admin || self.watch.iter().any(|p| pattern_matches(p, stream))
    }
}

/// An exact name, `prefix*` (which `*` alone is, with an empty prefix).
pub fn pattern_matches(pattern: &str, stream: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => stream.starts_with(prefix),
        None => pattern == stream,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Optional here so that a token without one is told so (jsonwebtoken reads the
    /// claims before it checks that `exp` is there).
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    blobcast: Permissions,
}

/// The keys tokens are checked with.
pub struct TokenKeys {
    secret: Option<DecodingKey>,
    /// The public key and the algorithms its family signs with.
    public: Option<(DecodingKey, &'static [Algorithm])>,
}

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

impl TokenKeys {
    /// None when neither file is given: tokens are not used.
    pub fn load(
        secret_file: Option<&Path>,
        public_key: Option<&Path>,
    ) -> Result<Option<TokenKeys>, KeyError> {
        if secret_file.is_none() && public_key.is_none() {
            return Ok(None);
        }
        let secret = secret_file
            .map(|path| read_secret(path).map(|s| DecodingKey::from_secret(&s)))
            .transpose()?;
        let public = public_key
            .map(|path| {
                let pem = read(path)?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    Ok((key, RSA))
                } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                    Ok((key, ED))
                } else {
                    Err(KeyError::NotAPublicKey(path.display().to_string()))
                }
            })
            .transpose()?;
        Ok(Some(TokenKeys { secret, public }))
    }

    /// Checks the signature, `exp` and `nbf`, and returns what the token allows. The
    /// key is chosen by the token's algorithm among the configured ones only, so an
    /// HS256 token can never be checked against the public key as if it were a secret.
    pub fn verify(&self, token: &str) -> Result<Permissions, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let (key, family) = if HMAC.contains(&header.alg) {
            (self.secret.as_ref(), HMAC)
        } else {
            match &self.public {
                Some((key, family)) if family.contains(&header.alg) => (Some(key), *family),
                _ => (None, HMAC),
            }
        };
        let key = key.ok_or(TokenError::UnknownAlgorithm(header.alg))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = family.to_vec();
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => Ok(data.claims.blobcast),
            Err(err) => Err(match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::MissingRequiredClaim(_) => TokenError::NoExpiry,
                ErrorKind::InvalidAlgorithm => TokenError::UnknownAlgorithm(header.alg),
                _ => TokenError::Malformed,
            }),
        }
    }
}

/// An HS256 token with `permissions`, valid for `ttl` from now: `blobcast token`.
pub fn mint(
    secret_file: &Path,
    permissions: Permissions,
    ttl: Duration,
) -> Result<String, KeyError> {
    let secret = read_secret(secret_file)?;
    let now = unix_now();
    let claims = Claims {
        exp: Some(now + ttl.as_secs()),
        nbf: None,
        blobcast: permissions,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&secret),
    )
    .map_err(|e| KeyError::Sign(e.to_string()))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The file's bytes without a trailing newline, which editors and `echo` add.
fn read_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut secret = read(path)?;
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(KeyError::EmptySecret(path.display().to_string()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(name: &str, secret: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("blobcast-{name}-{}", std::process::id()));
        std::fs::write(&path, secret).unwrap();
        path
    }

    fn sign(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn patterns_are_exact_or_a_prefix() {
        assert!(pattern_matches("cam1", "cam1"));
        assert!(!pattern_matches("cam1", "cam10"));
        assert!(pattern_matches("class-*", "class-7"));
        assert!(!pattern_matches("class-*", "clas"));
        assert!(pattern_matches("*", "anything"));
        let admin = Permissions {
            admin: true,
            ..Permissions::default()
        };
        assert!(admin.may_watch("x") && !admin.may_publish("x"));
    }

    #[test]
    fn minted_tokens_verify_and_every_bad_one_says_why() {
        let path = secret_file("token-unit", "a secret of enough length for HS256\n");
        let keys = TokenKeys::load(Some(&path), None).unwrap().unwrap();
        let permissions = Permissions {
            publish: vec!["cam1".into()],
            watch: vec!["class-*".into()],
            admin: false,
        };
        let token = mint(&path, permissions.clone(), Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token), Ok(permissions));

        let secret = "a secret of enough length for HS256";
        let now = unix_now();
        let claims = |exp: u64| serde_json::json!({"exp": exp, "blobcast": {"watch": ["*"]}});
        assert_eq!(
            keys.verify(&sign(secret, claims(now - 3600))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify(&sign("another secret", claims(now + 60))),
            Err(TokenError::BadSignature)
        );
        let early = serde_json::json!({"exp": now + 7200, "nbf": now + 3600, "blobcast": {}});
        assert_eq!(
            keys.verify(&sign(secret, early)),
            Err(TokenError::NotYetValid)
        );
        let forever = serde_json::json!({"blobcast": {"watch": ["*"]}});
        assert_eq!(
            keys.verify(&sign(secret, forever)),
            Err(TokenError::NoExpiry)
        );
        assert_eq!(keys.verify("not.a.jwt"), Err(TokenError::Malformed));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_eddsa_token_needs_the_public_key_and_cannot_pose_as_hmac() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let public = secret_file("ed-public", &pair.public_key_pem());
        let secret = secret_file("ed-secret", "some shared secret");
        let claims = serde_json::json!({"exp": unix_now() + 60, "blobcast": {"publish": ["a"]}});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let only_secret = TokenKeys::load(Some(&secret), None).unwrap().unwrap();
        assert_eq!(
            only_secret.verify(&token),
            Err(TokenError::UnknownAlgorithm(Algorithm::EdDSA))
        );
        let both = TokenKeys::load(Some(&secret), Some(&public))
            .unwrap()
            .unwrap();
        assert!(both.verify(&token).unwrap().may_publish("a"));
        // The public key's bytes used as an HMAC secret: the classic confusion attack.
        let forged = sign(&pair.public_key_pem(), claims);
        assert_eq!(both.verify(&forged), Err(TokenError::BadSignature));
        assert!(matches!(
            TokenKeys::load(None, Some(&secret)),
            Err(KeyError::NotAPublicKey(_))
        ));
        for path in [public, secret] {
            let _ = std::fs::remove_file(path);
        }
    }
}
