//! Topic and callback URLs: parsed, checked and normalised once, at the edge.
//!
//! Normalisation (W3C WebSub 5.1.1): percent-encoded unreserved characters are decoded, other
//! escapes get upper-case hex, the scheme and host are lower-cased and default ports dropped
//! (the `url` crate does the last two). The callback's own query string is kept as it is.

use std::fmt;

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is not a URL ({0})")]
    NotAUrl(String),
    #[error("must be an http or https URL")]
    Scheme,
    #[error("must have a host")]
    NoHost,
    #[error("must not contain a fragment (#...)")]
    Fragment,
    #[error("must not carry user credentials")]
    Credentials,
    #[error("is longer than {MAX_URL_LEN} bytes")]
    TooLong,
}

/// Longest topic or callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A normalised http(s) URL without fragment or credentials.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn parse(raw: &str) -> Result<HttpUrl, UrlError> {
        let raw = raw.trim();
        if raw.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(raw).map_err(|e| UrlError::NotAUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        let normalised = decode_unreserved(url.as_str());
        Ok(HttpUrl(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn url(&self) -> Url {
        // Parsed once already; the normalised form is a valid URL.
        Url::parse(&self.0).expect("normalised URL parses")
    }

    /// The destination server: `scheme://host:port`. Deliveries are grouped by it.
    pub fn destination(&self) -> String {
        let url = self.url();
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            Some(h) => h.to_string(),
            None => String::new(),
        };
        let port = url.port_or_known_default().unwrap_or(0);
        format!("{}://{}:{}", url.scheme(), host, port)
    }

    /// For stored values that were normalised when they were written.
    pub fn from_stored(s: String) -> HttpUrl {
        HttpUrl(s)
    }
}

/// The destination server of a stored endpoint, by which deliveries are grouped:
/// `scheme://host:port` for URLs with a host, `scheme:domain` for `mailto:` addresses, the
/// endpoint itself otherwise.
pub fn destination_of_endpoint(endpoint: &str) -> String {
    match Url::parse(endpoint) {
        Ok(url) if url.has_host() => HttpUrl(endpoint.to_owned()).destination(),
        Ok(url) if url.scheme() == "mailto" => {
            let domain = url.path().rsplit_once('@').map_or("", |(_, d)| d);
            format!("mailto:{}", domain.to_ascii_lowercase())
        }
        _ => endpoint.to_owned(),
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` where XX names an unreserved character; upper-cases the hex of the others.
fn decode_unreserved(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            let v = h * 16 + l;
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                out.push('%');
                out.push((bytes[i + 1] as char).to_ascii_uppercase());
                out.push((bytes[i + 2] as char).to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_escapes_are_decoded() {
        let a = HttpUrl::parse("http://Example.COM:80/a%2Db/%7euser?x=%2d%2f").unwrap();
        assert_eq!(a.as_str(), "http://example.com/a-b/~user?x=-%2F");
        let b = HttpUrl::parse("http://example.com/a-b/~user?x=-%2F").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(
            HttpUrl::parse("not a url"),
            Err(UrlError::NotAUrl(_))
        ));
        assert_eq!(HttpUrl::parse("ftp://x/").unwrap_err(), UrlError::Scheme);
        assert_eq!(
            HttpUrl::parse("http://x/#frag").unwrap_err(),
            UrlError::Fragment
        );
        assert_eq!(
            HttpUrl::parse("http://u:p@x/").unwrap_err(),
            UrlError::Credentials
        );
        assert!(HttpUrl::parse(&format!("http://x/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn query_is_kept() {
        let u = HttpUrl::parse("http://x/cb?a=1&b=two%20words").unwrap();
        assert_eq!(u.as_str(), "http://x/cb?a=1&b=two%20words");
    }

    #[test]
    fn destination_groups_by_origin() {
        let a = HttpUrl::parse("http://127.0.0.2/a").unwrap();
        let b = HttpUrl::parse("http://127.0.0.2:80/b?q").unwrap();
        assert_eq!(a.destination(), "http://127.0.0.2:80");
        assert_eq!(a.destination(), b.destination());
        let c = HttpUrl::parse("https://[::1]/x").unwrap();
        assert_eq!(c.destination(), "https://[::1]:443");
    }

    #[test]
    fn trailing_percent_is_kept() {
        assert_eq!(decode_unreserved("a%"), "a%");
        assert_eq!(decode_unreserved("a%4"), "a%4");
        assert_eq!(decode_unreserved("a%41"), "aA");
    }
}
