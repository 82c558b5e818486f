//! Authentication of fat pings: `X-Hub-Signature: sha256=HMAC(secret, body)` or
//! `Authorization: Bearer TOKEN`, from a publisher whose topic prefixes cover the topic (on
//! URL boundaries: [`crate::topic_prefix`]). Every credential a request carries must hold for
//! that publisher: a wrong signature next to a right token is refused.

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::config::PublisherConfig;
use crate::signature;

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials at all: 401.
    Missing,
    /// Credentials that do not match, or no publisher may push this topic: 403.
    Refused(&'static str),
}

pub fn authenticate<'a>(
    publishers: &'a [PublisherConfig],
    topic: &str,
    req: &HttpRequest,
    body: &[u8],
) -> Result<&'a PublisherConfig, AuthError> {
    let header_str = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let sig = header_str(header::HeaderName::from_static("x-hub-signature"));
    let bearer = header_str(header::AUTHORIZATION).and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
            .map(str::trim)
    });
    if sig.is_none() && bearer.is_none() {
        return Err(AuthError::Missing);
    }
    let mut candidates = publishers
        .iter()
        .filter(|p| p.prefixes.iter().any(|prefix| prefix.covers(topic)))
        .peekable();
    if candidates.peek().is_none() {
        return Err(AuthError::Refused(
            "no publisher may push content for this topic",
        ));
    }
    candidates
        .find(|p| {
            let token_holds = match (bearer, p.token.as_deref()) {
                (None, _) => true,
                (Some(given), Some(token)) => {
                    signature::constant_time_eq(given.as_bytes(), token.as_bytes())
                }
                (Some(_), None) => false,
            };
            let signature_holds = match (sig, p.secret.as_deref()) {
                (None, _) => true,
                (Some(given), Some(secret)) => signature::verify(given, secret.as_bytes(), body),
                (Some(_), None) => false,
            };
            token_holds && signature_holds
        })
        .ok_or(AuthError::Refused("credentials do not match"))
}
