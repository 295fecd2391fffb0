//! Signed tokens.
//!
//! - The **session token** the platform signs for one tenant:
//!   `base64url(JSON claims) "." base64url(HMAC-SHA256(secret, "session." + claims_b64))`,
//!   claims `{"tenant_id": uuid, "edition": "enterprise"|..., "exp": unix seconds, "sub"?: string}`.
//! - The **share signature** of a read-only link to one domain's records:
//!   `hex(HMAC-SHA256(secret, "share." + domain_id + "." + exp))` for a link of share
//!   epoch 0, `hex(HMAC-SHA256(secret, "share." + domain_id + "." + exp + "." + epoch))`
//!   for a later epoch. Revoking a domain's links raises its epoch (kept by the
//!   gateway in a KV bucket); a link of an older epoch is refused. Epoch-0 links keep
//!   the original form, so links made before revocation existed stay valid until revoked.
//!
//! The two use distinct prefixes, so neither can be replayed as the other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The development default of `GATEWAY_TOKEN_SECRET` (a loud warning is logged when used).
pub const DEV_SECRET: &str = "dev-secret";

/// The longest a session token may live: a token whose `exp` lies further ahead than
/// this is refused, so a token that leaks is of use for a day at most.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

/// The most bytes a command's `requested_by` may hold (docs/interface.md §2.1).
pub const REQUESTED_BY_MAX_BYTES: usize = 256;

/// Editions that include managed sending.
pub const MANAGED_SENDING_EDITIONS: &[&str] = &["enterprise", "ee"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub tenant_id: Uuid,
    /// The tenant's edition of the platform, e.g. `enterprise` or `community`.
    pub edition: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Who is acting (recorded as `requested_by`), if the platform says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

impl Claims {
    pub fn managed_sending(&self) -> bool {
        MANAGED_SENDING_EDITIONS
            .iter()
            .any(|e| e.eq_ignore_ascii_case(self.edition.trim()))
    }

    /// Who the commands sent with this token are recorded as requested by:
    /// `tenant:<sub>`, so that no token passes for an operator (`operator:<name>`) or a
    /// service (`scheduler`, …); `gateway` when the token names nobody. Cut to
    /// [`REQUESTED_BY_MAX_BYTES`] (at a character boundary).
    pub fn requested_by(&self) -> String {
        let Some(sub) = &self.sub else {
            return "gateway".into();
        };
        let mut who = format!("tenant:{sub}");
        let mut end = who.len().min(REQUESTED_BY_MAX_BYTES);
        while !who.is_char_boundary(end) {
            end -= 1;
        }
        who.truncate(end);
        who
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
    /// `exp` lies more than [`MAX_TOKEN_LIFETIME_SECS`] ahead.
    LifetimeTooLong,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => {
                "the access token is missing or malformed; open this page from the platform again"
            }
            TokenError::BadSignature => {
                "the access token is not valid; open this page from the platform again"
            }
            TokenError::Expired => {
                "the access token has expired; open this page from the platform again"
            }
            TokenError::LifetimeTooLong => {
                "the access token is valid for longer than the gateway allows (a day); open this page from the platform again"
            }
        }
    }
}

#[derive(Clone)]
pub struct Keys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Keys {
            secret: secret.as_ref().to_vec(),
        }
    }

    pub fn is_dev_default(&self) -> bool {
        self.secret == DEV_SECRET.as_bytes()
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }

    /// Signs a session token (what the platform does; also used by tests and `gateway token`).
    pub fn sign(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let sig = B64.encode(self.mac(&[b"session.", body.as_bytes()]));
        format!("{body}.{sig}")
    }

    /// Verifies a session token at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let (body, sig) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let expected = self.mac(&[b"session.", body.as_bytes()]);
        if !bool::from(expected.ct_eq(&sig)) {
            return Err(TokenError::BadSignature);
        }
        let bytes = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.exp.saturating_sub(now) > MAX_TOKEN_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(claims)
    }

    /// The signature of a share link to `domain_id`, valid until `exp` (Unix seconds),
    /// of share epoch 0.
    pub fn share_sig(&self, domain_id: Uuid, exp: i64) -> String {
        self.share_sig_at(domain_id, exp, 0)
    }

    /// The signature of a share link of share epoch `epoch` (see the module docs).
    pub fn share_sig_at(&self, domain_id: Uuid, exp: i64, epoch: u64) -> String {
        let id = domain_id.hyphenated().to_string();
        let exp = exp.to_string();
        let epoch_s = epoch.to_string();
        let mut parts: Vec<&[u8]> = vec![b"share.", id.as_bytes(), b".", exp.as_bytes()];
        if epoch > 0 {
            parts.extend([b".".as_slice(), epoch_s.as_bytes()]);
        }
        hex::encode(self.mac(&parts))
    }

    pub fn verify_share(
        &self,
        domain_id: Uuid,
        exp: i64,
        sig: &str,
        now: i64,
    ) -> Result<(), TokenError> {
        self.verify_share_at(domain_id, exp, 0, sig, now)
    }

    /// Verifies the signature (binding the domain, the expiry and the epoch), then the expiry.
    /// Whether the epoch is still current is the caller's question.
    pub fn verify_share_at(
        &self,
        domain_id: Uuid,
        exp: i64,
        epoch: u64,
        sig: &str,
        now: i64,
    ) -> Result<(), TokenError> {
        let Ok(given) = hex::decode(sig.trim()) else {
            return Err(TokenError::Malformed);
        };
        let expected = hex::decode(self.share_sig_at(domain_id, exp, epoch)).expect("hex");
        if !bool::from(expected.ct_eq(&given)) {
            return Err(TokenError::BadSignature);
        }
        if exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            tenant_id: Uuid::new_v4(),
            edition: "enterprise".into(),
            exp,
            sub: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_a_changed_one_does_not() {
        let k = Keys::new("s3cret");
        let c = claims(2_000);
        let t = k.sign(&c);
        assert_eq!(k.verify(&t, 1_000), Ok(c.clone()));
        assert_eq!(k.verify(&t, 2_000), Err(TokenError::Expired));
        assert_eq!(
            Keys::new("other").verify(&t, 1_000),
            Err(TokenError::BadSignature)
        );
        // Another tenant's id in the claims, the old signature.
        let forged = Claims {
            tenant_id: Uuid::new_v4(),
            ..c
        };
        let body = k.sign(&forged);
        let tampered = format!(
            "{}.{}",
            body.split('.').next().unwrap(),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(k.verify(&tampered, 1_000), Err(TokenError::BadSignature));
        assert_eq!(k.verify("nonsense", 1_000), Err(TokenError::Malformed));
    }

    #[test]
    fn share_signatures_bind_the_domain_and_the_expiry() {
        let k = Keys::new("s3cret");
        let d = Uuid::new_v4();
        let sig = k.share_sig(d, 5_000);
        assert!(k.verify_share(d, 5_000, &sig, 1_000).is_ok());
        assert_eq!(
            k.verify_share(d, 5_001, &sig, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            k.verify_share(Uuid::new_v4(), 5_000, &sig, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            k.verify_share(d, 5_000, &sig, 6_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn share_signatures_bind_the_epoch() {
        let k = Keys::new("s3cret");
        let d = Uuid::new_v4();
        // Epoch 0 is the original form.
        assert_eq!(k.share_sig_at(d, 5_000, 0), k.share_sig(d, 5_000));
        let sig = k.share_sig_at(d, 5_000, 3);
        assert_ne!(sig, k.share_sig(d, 5_000));
        assert!(k.verify_share_at(d, 5_000, 3, &sig, 1_000).is_ok());
        for epoch in [0, 2, 4, 30] {
            assert_eq!(
                k.verify_share_at(d, 5_000, epoch, &sig, 1_000),
                Err(TokenError::BadSignature),
                "epoch {epoch}"
            );
        }
        // "exp.epoch" cannot be shifted: exp 5000 epoch 3 is not exp 50 epoch 003 etc.
        assert_eq!(
            k.verify_share_at(d, 50, 3, &k.share_sig_at(d, 5_000, 3), 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_token_living_longer_than_the_maximum_is_refused() {
        let k = Keys::new("s3cret");
        let now = 1_000_000;
        let longest = claims(now + MAX_TOKEN_LIFETIME_SECS);
        assert_eq!(k.verify(&k.sign(&longest), now), Ok(longest));
        for exp in [
            now + MAX_TOKEN_LIFETIME_SECS + 1,
            now + 365 * 86_400,
            i64::MAX,
        ] {
            assert_eq!(
                k.verify(&k.sign(&claims(exp)), now),
                Err(TokenError::LifetimeTooLong),
                "exp {exp}"
            );
        }
    }

    #[test]
    fn a_token_cannot_pass_for_an_operator_or_a_service() {
        let with_sub = |sub: Option<&str>| Claims {
            sub: sub.map(str::to_string),
            ..claims(1)
        };
        assert_eq!(with_sub(Some("user:42")).requested_by(), "tenant:user:42");
        assert_eq!(
            with_sub(Some("operator:x")).requested_by(),
            "tenant:operator:x"
        );
        assert_eq!(
            with_sub(Some("scheduler")).requested_by(),
            "tenant:scheduler"
        );
        assert_eq!(with_sub(None).requested_by(), "gateway");
        // Cut to the command's limit, never inside a character.
        let long = with_sub(Some("é".repeat(200).as_str())).requested_by();
        assert!(long.starts_with("tenant:é") && long.len() <= REQUESTED_BY_MAX_BYTES);
        assert_eq!(long.len(), REQUESTED_BY_MAX_BYTES - 1);
    }

    #[test]
    fn editions() {
        assert!(claims(1).managed_sending());
        assert!(!Claims {
            edition: "community".into(),
            ..claims(1)
        }
        .managed_sending());
    }
}
