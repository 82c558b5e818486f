//! The hub endpoint's protocol: parsing `hub.*` parameters into a typed request.
//! Unknown parameters are ignored (W3C WebSub 5.1).

use crate::urls::{HttpUrl, UrlError};

/// `hub.secret` must be less than 200 bytes (W3C WebSub 5.1).
pub const MAX_SECRET_BYTES: usize = 199;
/// Topics one publish request may name.
pub const MAX_TOPICS_PER_PING: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubRequest {
    Subscribe(SubRequest),
    Unsubscribe(SubRequest),
    Publish(Vec<HttpUrl>),
    /// `hub.mode=relay`: the callback takes batches for every callback of its destination.
    Relay(RelayRequest),
    Unrelay(RelayRequest),
    /// `hub.callback=mailto:ADDRESS`: updates of the topic by mail (or no more).
    Mail(MailRequest),
}

/// A mail subscription's request: verified with a confirmation mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRequest {
    pub topic: HttpUrl,
    /// Lowercase.
    pub address: String,
    pub subscribe: bool,
}

/// The address of a `mailto:` callback (one address, no query), lowercase.
pub fn mail_address(callback: &str) -> Result<String, RequestError> {
    let invalid = |reason: &str| RequestError::Invalid {
        param: "hub.callback",
        reason: reason.to_owned(),
    };
    let rest = callback
        .strip_prefix("mailto:")
        .ok_or_else(|| invalid("is not a mailto: URL"))?;
    let address = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| invalid("is not UTF-8"))?
        .trim()
        .to_ascii_lowercase();
    if address.contains(['?', ',', ' ', '<', '>']) || address.len() > 254 {
        return Err(invalid("must name one mail address, without headers"));
    }
    address
        .parse::<lettre::Address>()
        .map_err(|e| invalid(&format!("is not a mail address: {e}")))?;
    Ok(address)
}

/// A relay registration (an extension of WebSub: one batch per destination server).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayRequest {
    pub callback: HttpUrl,
    pub lease_seconds: Option<u64>,
    pub secret: Option<String>,
}

impl std::fmt::Debug for RelayRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayRequest")
            .field("callback", &self.callback)
            .field("lease_seconds", &self.lease_seconds)
            .field("has_secret", &self.secret.is_some())
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct SubRequest {
    pub topic: HttpUrl,
    pub callback: HttpUrl,
    /// Requested lease (subscribe only).
    pub lease_seconds: Option<u64>,
    pub secret: Option<String>,
}

impl std::fmt::Debug for SubRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubRequest")
            .field("topic", &self.topic)
            .field("callback", &self.callback)
            .field("lease_seconds", &self.lease_seconds)
            .field("has_secret", &self.secret.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{param} {reason}")]
    Invalid { param: &'static str, reason: String },
    #[error(
        "hub.mode {0:?} is not supported; use subscribe, unsubscribe, publish, relay or unrelay"
    )]
    UnknownMode(String),
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn url_param(pairs: &[(String, String)], key: &'static str) -> Result<HttpUrl, RequestError> {
    let raw = first(pairs, key)
        .filter(|v| !v.trim().is_empty())
        .ok_or(RequestError::Missing(key))?;
    HttpUrl::parse(raw).map_err(|e: UrlError| RequestError::Invalid {
        param: key,
        reason: e.to_string(),
    })
}

pub fn parse(pairs: &[(String, String)]) -> Result<HubRequest, RequestError> {
    let mode = first(pairs, "hub.mode")
        .filter(|m| !m.is_empty())
        .ok_or(RequestError::Missing("hub.mode"))?;
    match mode {
        "relay" | "unrelay" => {
            let callback = url_param(pairs, "hub.callback")?;
            let relay = mode == "relay";
            let (lease_seconds, secret) = lease_and_secret(pairs, relay)?;
            if relay && secret.is_none() {
                return Err(RequestError::Missing("hub.secret"));
            }
            let req = RelayRequest {
                callback,
                lease_seconds,
                secret,
            };
            Ok(if relay {
                HubRequest::Relay(req)
            } else {
                HubRequest::Unrelay(req)
            })
        }
        "subscribe" | "unsubscribe"
            if first(pairs, "hub.callback").is_some_and(|c| c.trim().starts_with("mailto:")) =>
        {
            let address = mail_address(first(pairs, "hub.callback").unwrap_or_default().trim())?;
            let topic = url_param(pairs, "hub.topic")?;
            Ok(HubRequest::Mail(MailRequest {
                topic,
                address,
                subscribe: mode == "subscribe",
            }))
        }
        "subscribe" | "unsubscribe" => {
            let callback = url_param(pairs, "hub.callback")?;
            let topic = url_param(pairs, "hub.topic")?;
            let subscribe = mode == "subscribe";
            let (lease_seconds, secret) = lease_and_secret(pairs, subscribe)?;
            let req = SubRequest {
                topic,
                callback,
                lease_seconds,
                secret,
            };
            Ok(if subscribe {
                HubRequest::Subscribe(req)
            } else {
                HubRequest::Unsubscribe(req)
            })
        }
        "publish" => parse_publish(pairs).map(HubRequest::Publish),
        other => Err(RequestError::UnknownMode(other.to_owned())),
    }
}

/// `hub.lease_seconds` and `hub.secret`, read only when the request adds something
/// (`subscribe`) and ignored otherwise (they mean nothing for `unsubscribe`).
fn lease_and_secret(
    pairs: &[(String, String)],
    subscribe: bool,
) -> Result<(Option<u64>, Option<String>), RequestError> {
    let lease_seconds = match first(pairs, "hub.lease_seconds").filter(|_| subscribe) {
        None | Some("") => None,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(RequestError::Invalid {
                    param: "hub.lease_seconds",
                    reason: format!("must be a positive integer, not {v:?}"),
                });
            }
        },
    };
    let secret = match first(pairs, "hub.secret").filter(|_| subscribe) {
        None | Some("") => None,
        Some(s) if s.len() > MAX_SECRET_BYTES => {
            return Err(RequestError::Invalid {
                param: "hub.secret",
                reason: format!(
                    "must be less than 200 bytes; it has {} bytes (UTF-8)",
                    s.len()
                ),
            });
        }
        Some(s) => Some(s.to_owned()),
    };
    Ok((lease_seconds, secret))
}

/// Topics of a publish ping: `hub.url` (repeatable), `hub.url[]`, or `hub.topic`. A value that
/// is a comma-separated list of http(s) URLs (`http://a/,http://b/`) counts as several.
fn parse_publish(pairs: &[(String, String)]) -> Result<Vec<HttpUrl>, RequestError> {
    let mut topics: Vec<HttpUrl> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut any = false;
    for (k, v) in pairs {
        let param: &'static str = match k.as_str() {
            "hub.url" => "hub.url",
            "hub.url[]" => "hub.url[]",
            "hub.topic" => "hub.topic",
            _ => continue,
        };
        any = true;
        let parsed = match split_url_list(v) {
            Some(list) => list,
            None => vec![HttpUrl::parse(v).map_err(|e| RequestError::Invalid {
                param,
                reason: e.to_string(),
            })?],
        };
        for t in parsed {
            if seen.insert(t.as_str().to_owned()) {
                // Refused as soon as it is known: the rest is not parsed.
                if topics.len() == MAX_TOPICS_PER_PING {
                    return Err(RequestError::Invalid {
                        param: "hub.url",
                        reason: format!("names more than {MAX_TOPICS_PER_PING} topics"),
                    });
                }
                topics.push(t);
            }
        }
    }
    if !any {
        return Err(RequestError::Missing("hub.url (or hub.topic)"));
    }
    Ok(topics)
}

/// `Some` when `v` is a comma-separated list of two or more absolute http(s) URLs. A comma that
/// is not followed by a scheme belongs to the URL itself (`http://a/x,y` is one URL).
fn split_url_list(v: &str) -> Option<Vec<HttpUrl>> {
    let lower = v.to_ascii_lowercase();
    if !lower.contains(",http://") && !lower.contains(",https://") {
        return None;
    }
    v.split(',')
        .map(str::trim)
        .map(|part| HttpUrl::parse(part).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn subscribe_with_everything() {
        let r = parse(&p(&[
            ("hub.mode", "subscribe"),
            ("hub.callback", "http://s/cb?x=1"),
            ("hub.topic", "http://t/feed"),
            ("hub.lease_seconds", "3600"),
            ("hub.secret", "s3cret"),
            ("foo", "bar"),
            ("hub.foo", "hub.bar"),
        ]))
        .unwrap();
        let HubRequest::Subscribe(s) = r else {
            panic!()
        };
        assert_eq!(s.lease_seconds, Some(3600));
        assert_eq!(s.secret.as_deref(), Some("s3cret"));
        assert_eq!(s.callback.as_str(), "http://s/cb?x=1");
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "secrets never in Debug"
        );
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = parse(&p(&[("hub.mode", "subscribe"), ("hub.topic", "http://t/")])).unwrap_err();
        assert_eq!(e, RequestError::Missing("hub.callback"));
        let e = parse(&p(&[
            ("hub.callback", "http://c/"),
            ("hub.topic", "http://t/"),
        ]))
        .unwrap_err();
        assert_eq!(e, RequestError::Missing("hub.mode"));
        let e = parse(&p(&[("hub.mode", "bogus")])).unwrap_err();
        assert!(matches!(e, RequestError::UnknownMode(_)));
        let e = parse(&p(&[
            ("hub.mode", "subscribe"),
            ("hub.callback", "nope"),
            ("hub.topic", "http://t/"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("hub.callback"), "{e}");
        let e = parse(&p(&[
            ("hub.mode", "subscribe"),
            ("hub.callback", "http://c/"),
            ("hub.topic", "http://t/"),
            ("hub.lease_seconds", "soon"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("hub.lease_seconds"));
    }

    #[test]
    fn secret_limit_counts_utf8_bytes() {
        let base = [
            ("hub.mode", "subscribe"),
            ("hub.callback", "http://c/"),
            ("hub.topic", "http://t/"),
        ];
        let with = |s: &str| {
            let mut v = p(&base);
            v.push(("hub.secret".into(), s.into()));
            parse(&v)
        };
        assert!(with(&"a".repeat(199)).is_ok());
        assert!(with(&"a".repeat(200)).is_err());
        // 100 two-byte characters: 200 bytes.
        assert!(with(&"é".repeat(100)).is_err());
        assert!(with(&format!("{}a", "é".repeat(99))).is_ok());
    }

    #[test]
    fn unsubscribe_ignores_lease_and_secret() {
        let r = parse(&p(&[
            ("hub.mode", "unsubscribe"),
            ("hub.callback", "http://c/"),
            ("hub.topic", "http://t/"),
            ("hub.lease_seconds", "garbage"),
            ("hub.secret", &"x".repeat(500)),
        ]))
        .unwrap();
        assert!(matches!(
            r,
            HubRequest::Unsubscribe(SubRequest {
                secret: None,
                lease_seconds: None,
                ..
            })
        ));
    }

    #[test]
    fn publish_forms() {
        let r = parse(&p(&[
            ("hub.mode", "publish"),
            ("hub.url", "http://a/"),
            ("hub.url", "http://b/"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            HubRequest::Publish(vec![
                HttpUrl::parse("http://a/").unwrap(),
                HttpUrl::parse("http://b/").unwrap()
            ])
        );
        let r = parse(&p(&[("hub.mode", "publish"), ("hub.topic", "http://a/")])).unwrap();
        assert!(matches!(r, HubRequest::Publish(v) if v.len() == 1));
        let r = parse(&p(&[
            ("hub.mode", "publish"),
            ("hub.url[]", "http://a/"),
            ("hub.url[]", "http://a/"),
        ]))
        .unwrap();
        assert!(matches!(r, HubRequest::Publish(v) if v.len() == 1));
        let r = parse(&p(&[
            ("hub.mode", "publish"),
            ("hub.url", "http://a/,http://b/"),
        ]))
        .unwrap();
        assert!(matches!(r, HubRequest::Publish(v) if v.len() == 2));
        // A comma inside one URL stays one URL.
        let r = parse(&p(&[("hub.mode", "publish"), ("hub.url", "http://a/x,y")])).unwrap();
        assert!(matches!(r, HubRequest::Publish(v) if v.len() == 1));
        assert!(parse(&p(&[("hub.mode", "publish"), ("hub.url", "not a url")])).is_err());
        assert!(parse(&p(&[("hub.mode", "publish")])).is_err());
    }

    #[test]
    fn relay_registrations_need_a_callback_and_a_secret() {
        let r = parse(&p(&[
            ("hub.mode", "relay"),
            ("hub.callback", "http://d.example/relay"),
            ("hub.secret", "s"),
            ("hub.lease_seconds", "60"),
        ]))
        .unwrap();
        let HubRequest::Relay(r) = r else {
            panic!("a relay registration")
        };
        assert_eq!(
            (r.lease_seconds, r.secret.as_deref()),
            (Some(60), Some("s"))
        );
        let e = parse(&p(&[("hub.mode", "relay"), ("hub.callback", "http://d/")])).unwrap_err();
        assert_eq!(e, RequestError::Missing("hub.secret"));
        let r = parse(&p(&[
            ("hub.mode", "unrelay"),
            ("hub.callback", "http://d/"),
        ]))
        .unwrap();
        assert!(matches!(r, HubRequest::Unrelay(_)));
    }
}
