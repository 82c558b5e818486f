//! Signed tokens in the links and addresses of mail: a confirmation link (subscribe or
//! unsubscribe), a one-click unsubscribe link, a subscriber's bounce tag. Signed with the
//! store's key (HMAC-SHA256), so any node of the store can check them and nobody else can make
//! them; a confirmation expires.

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Subscribe,
    Unsubscribe,
}

/// What a link says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub act: Action,
    pub topic: String,
    /// The mail address, lowercase.
    pub address: String,
    /// When it stops working (ms); 0: never (unsubscribe links in every mail).
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is damaged or was not made by this hub")]
    Invalid,
    #[error("the link has expired: ask again")]
    Expired,
}

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(purpose);
        m.update(&[0]);
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    /// A token for a link.
    pub fn token(&self, claim: &Claim) -> String {
        let payload = serde_json::to_vec(claim).expect("claims serialise");
        let tag = self.mac(b"link", &payload);
        format!("{}.{}", B64.encode(&payload), B64.encode(&tag[..16]))
    }

    /// The claim of a token this hub made, unless expired at `now_ms`.
    pub fn check(&self, token: &str, now_ms: u64) -> Result<Claim, TokenError> {
        let (payload, tag) = token.trim().split_once('.').ok_or(TokenError::Invalid)?;
        let payload = B64.decode(payload).map_err(|_| TokenError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Invalid)?;
        let want = self.mac(b"link", &payload);
        if !crate::signature::constant_time_eq(&tag, &want[..16]) {
            return Err(TokenError::Invalid);
        }
        let claim: Claim = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        if claim.exp != 0 && claim.exp < now_ms {
            return Err(TokenError::Expired);
        }
        Ok(claim)
    }

    /// A subscriber's bounce tag (16 hex digits, for `NAME-bounces+TAG@domain`).
    pub fn bounce_tag(&self, topic: &str, address: &str) -> String {
        let data = format!("{topic}\0{address}");
        hex::encode(&self.mac(b"bounce", data.as_bytes())[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_claim_and_refuse_tampering_and_age() {
        let s = Signer::new(b"k".to_vec());
        let c = Claim {
            act: Action::Subscribe,
            topic: "https://h/t/b".into(),
            address: "a@example.org".into(),
            exp: 100,
        };
        let t = s.token(&c);
        assert_eq!(s.check(&t, 50), Ok(c.clone()));
        assert_eq!(s.check(&t, 101), Err(TokenError::Expired));
        let mut forged = t.clone();
        forged.insert(3, 'x');
        assert_eq!(s.check(&forged, 50), Err(TokenError::Invalid));
        assert_eq!(
            Signer::new(b"other".to_vec()).check(&t, 50),
            Err(TokenError::Invalid)
        );
        assert_eq!(s.bounce_tag("t", "a").len(), 16);
        assert_ne!(s.bounce_tag("t", "a"), s.bounce_tag("t", "b"));
    }
}
