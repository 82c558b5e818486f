//! The content the load test publishes: a first line naming the event and its publish time,
//! padded to the payload size. Every subscription has its own secret, so every delivery is
//! signed and checked.

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const CONTENT_TYPE: &str = "text/plain; charset=utf-8";

pub fn secret(subscriber: usize) -> String {
    format!("loadtest-secret-{subscriber}")
}

/// `event=N sent_us=T\n` and padding up to `size` bytes.
pub fn body(event: usize, sent_us: u64, size: usize) -> Bytes {
    let mut s = format!("event={event} sent_us={sent_us}\n");
    if s.len() < size {
        s.push_str(&"x".repeat(size - s.len()));
    }
    Bytes::from(s)
}

pub fn parse(body: &[u8]) -> Option<(usize, u64)> {
    let end = body.iter().position(|b| *b == b'\n')?;
    let line = std::str::from_utf8(&body[..end]).ok()?;
    let mut event = None;
    let mut sent = None;
    for part in line.split(' ') {
        if let Some(v) = part.strip_prefix("event=") {
            event = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("sent_us=") {
            sent = v.parse().ok();
        }
    }
    Some((event?, sent?))
}

/// `sha256=<hex>` of the body under subscriber's secret, as the hub sends it.
pub fn sign(subscriber: usize, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret(subscriber).as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = body(7, 123456, 100);
        assert_eq!(b.len(), 100);
        assert_eq!(parse(&b), Some((7, 123456)));
        assert_eq!(parse(b"nothing"), None);
        assert!(sign(1, &b).starts_with("sha256="));
        assert_ne!(sign(1, &b), sign(2, &b));
    }
}
