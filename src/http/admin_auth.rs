//! Who may see the status page and use the admin API.
//!
//! - With `admin.token` set: a request must carry it, as `Authorization: Bearer <token>` or in
//!   the `hubcast_admin` cookie that signing in on the page sets (HttpOnly, SameSite=Strict).
//! - Without a token: only clients on loopback that come directly are served. A request that
//!   carries `Forwarded`, `X-Forwarded-For` or `X-Real-IP` came through a proxy and is treated
//!   as coming from beyond loopback, even when the proxy itself runs on the same machine.
//!
//! Actions (POST) must also be same-origin: a browser's `Origin` must match the `Host` the
//! request was sent to, and `Sec-Fetch-Site` must not be `cross-site`.

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::signature::constant_time_eq;

/// Name of the sign-in cookie.
pub const COOKIE: &str = "hubcast_admin";

#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// A token is configured and the request has none, or a wrong one.
    NoToken,
    /// No token is configured and the request is not from direct loopback.
    NotLoopback,
    /// An action from another origin.
    CrossOrigin,
}

impl Denied {
    /// `401` when a token would let the request in, `403` otherwise.
    pub fn status(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            Denied::NoToken => StatusCode::UNAUTHORIZED,
            Denied::NotLoopback | Denied::CrossOrigin => StatusCode::FORBIDDEN,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Denied::NoToken => {
                "admin token required: send Authorization: Bearer <admin.token> or sign in"
            }
            Denied::NotLoopback => {
                "the admin pages answer direct loopback clients only; set admin.token to use them from elsewhere"
            }
            Denied::CrossOrigin => "cross-origin admin action refused",
        }
    }
}

/// May this request read the admin views?
pub fn check(req: &HttpRequest, token: Option<&str>) -> Result<(), Denied> {
    match token {
        Some(expected) => {
            let given = bearer(req).or_else(|| req.cookie(COOKIE).map(|c| c.value().to_owned()));
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), expected.as_bytes()) => Ok(()),
                _ => Err(Denied::NoToken),
            }
        }
        None => {
            let direct_loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback())
                && !["forwarded", "x-forwarded-for", "x-real-ip"]
                    .iter()
                    .any(|h| req.headers().contains_key(*h));
            if direct_loopback {
                Ok(())
            } else {
                Err(Denied::NotLoopback)
            }
        }
    }
}

/// May this request perform an admin action?
pub fn check_action(req: &HttpRequest, token: Option<&str>) -> Result<(), Denied> {
    check(req, token)?;
    let h = req.headers();
    if h.get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return Err(Denied::CrossOrigin);
    }
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin_host.is_none() || origin_host != host {
            return Err(Denied::CrossOrigin);
        }
    }
    Ok(())
}

/// Does `candidate` match the configured token?
pub fn token_matches(candidate: &str, token: Option<&str>) -> bool {
    token.is_some_and(|t| constant_time_eq(candidate.as_bytes(), t.as_bytes()))
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const TOKEN: &str = "0123456789abcdef";

    fn loopback() -> TestRequest {
        TestRequest::default().peer_addr("127.0.0.1:5000".parse().unwrap())
    }

    #[test]
    fn without_a_token_only_direct_loopback_is_served() {
        assert_eq!(check(&loopback().to_http_request(), None), Ok(()));
        let remote = TestRequest::default()
            .peer_addr("192.0.2.1:5000".parse().unwrap())
            .to_http_request();
        assert_eq!(check(&remote, None), Err(Denied::NotLoopback));
        let proxied = loopback()
            .insert_header(("X-Forwarded-For", "192.0.2.1"))
            .to_http_request();
        assert_eq!(check(&proxied, None), Err(Denied::NotLoopback));
    }

    #[test]
    fn with_a_token_it_is_required_everywhere() {
        let t = Some(TOKEN);
        assert_eq!(
            check(&loopback().to_http_request(), t),
            Err(Denied::NoToken)
        );
        let ok = loopback()
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .to_http_request();
        assert_eq!(check(&ok, t), Ok(()));
        let wrong = loopback()
            .insert_header(("Authorization", "Bearer 0123456789abcdeX"))
            .to_http_request();
        assert_eq!(check(&wrong, t), Err(Denied::NoToken));
        let cookie = TestRequest::default()
            .peer_addr("192.0.2.1:5000".parse().unwrap())
            .cookie(actix_web::cookie::Cookie::new(COOKIE, TOKEN))
            .to_http_request();
        assert_eq!(check(&cookie, t), Ok(()));
    }

    #[test]
    fn actions_must_be_same_origin() {
        let same = loopback()
            .insert_header(("Host", "127.0.0.1:8080"))
            .insert_header(("Origin", "http://127.0.0.1:8080"))
            .to_http_request();
        assert_eq!(check_action(&same, None), Ok(()));
        let other = loopback()
            .insert_header(("Host", "127.0.0.1:8080"))
            .insert_header(("Origin", "http://evil.example"))
            .to_http_request();
        assert_eq!(check_action(&other, None), Err(Denied::CrossOrigin));
        let fetch = loopback()
            .insert_header(("Sec-Fetch-Site", "cross-site"))
            .to_http_request();
        assert_eq!(check_action(&fetch, None), Err(Denied::CrossOrigin));
        // Non-browser clients send no Origin.
        assert_eq!(check_action(&loopback().to_http_request(), None), Ok(()));
    }
}
