//! Who may see the status page and use the admin API.
//!
//! - The `Host` a request was sent to must be this hub's: the host of `server.public_url`,
//!   `localhost`, or the address `server.listen` names (any address literal when it listens on
//!   all of them); ports are not compared. A page on another site that re-binds its own name
//!   to this machine's address (DNS rebinding) sends its own name, and is refused with `421`.
//! - With `admin.token` set: a request must carry it, as `Authorization: Bearer <token>` or in
//!   the `hubcast_admin` cookie that signing in on the page sets (HttpOnly, SameSite=Strict).
//! - Without a token: only clients on loopback that come directly are served. A request that
//!   carries `Forwarded`, `X-Forwarded-For` or `X-Real-IP` came through a proxy and is treated
//!   as coming from beyond loopback, even when the proxy itself runs on the same machine.
//!
//! Actions (POST) must also be same-origin: `Origin` naming the `Host` the request was sent
//! to, or `Sec-Fetch-Site: same-origin`, and never `Sec-Fetch-Site: cross-site`. A request
//! that authenticates with `Authorization: Bearer` (which a browser never adds by itself) may
//! omit both: scripts with the token need not pretend to be a browser.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::config::Config;
use crate::signature::constant_time_eq;

/// Name of the sign-in cookie.
pub const COOKIE: &str = "hubcast_admin";

#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// The request was sent to a host name that is not this hub's.
    WrongHost(String),
    /// A token is configured and the request has none, or a wrong one.
    NoToken,
    /// No token is configured and the request is not from direct loopback.
    NotLoopback,
    /// An action from another origin, or one that does not say where it comes from.
    CrossOrigin,
}

impl Denied {
    /// `421` for another host's name, `401` when a token would let the request in, `403`
    /// otherwise.
    pub fn status(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            Denied::WrongHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Denied::NoToken => StatusCode::UNAUTHORIZED,
            Denied::NotLoopback | Denied::CrossOrigin => StatusCode::FORBIDDEN,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Denied::WrongHost(host) => format!(
                "the admin pages do not answer requests for host {host:?}: use the host of \
                 server.public_url or of server.listen"
            ),
            Denied::NoToken => {
                "admin token required: send Authorization: Bearer <admin.token> or sign in".into()
            }
            Denied::NotLoopback => "the admin pages answer direct loopback clients only; set \
                                    admin.token to use them from elsewhere"
                .into(),
            Denied::CrossOrigin => "admin actions must be same-origin: send Origin (browsers do) \
                                    or authenticate with Authorization: Bearer"
                .into(),
        }
    }
}

/// What the admin pages check, from the config.
#[derive(Debug, Clone)]
pub struct Gate {
    token: Option<String>,
    /// Host names (lowercase) the hub answers admin requests for.
    names: Vec<String>,
    /// The listen address, or `None` when it is unspecified (all addresses).
    listen_ip: Option<IpAddr>,
}

impl Gate {
    pub fn new(cfg: &Config) -> Gate {
        let mut names = vec!["localhost".to_owned()];
        if let Some(host) = cfg.public_url.as_ref().and_then(|u| u.host_str()) {
            names.push(host.trim_matches(['[', ']']).to_ascii_lowercase());
        }
        let ip = cfg.listen.ip();
        Gate {
            token: cfg.admin.token.clone(),
            names,
            listen_ip: (!ip.is_unspecified()).then_some(ip),
        }
    }

    /// Is `host` (a `Host` header's value) one of this hub's names?
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if self.names.contains(&name) {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => self.listen_ip.is_none_or(|l| l == ip),
            Err(_) => false,
        }
    }

    /// Was this request sent to one of this hub's names? (A request without `Host`, which
    /// browsers always send, is not a rebinding page's.)
    pub fn check_host(&self, req: &HttpRequest) -> Result<(), Denied> {
        match req.headers().get(header::HOST) {
            Some(host) => {
                let host = host.to_str().unwrap_or("(not text)");
                if self.host_allowed(host) {
                    Ok(())
                } else {
                    Err(Denied::WrongHost(host.to_owned()))
                }
            }
            None => Ok(()),
        }
    }

    /// May this request read the admin views?
    pub fn check(&self, req: &HttpRequest) -> Result<(), Denied> {
        self.check_host(req)?;
        match self.token.as_deref() {
            Some(expected) => {
                let given =
                    bearer(req).or_else(|| req.cookie(COOKIE).map(|c| c.value().to_owned()));
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
    pub fn check_action(&self, req: &HttpRequest) -> Result<(), Denied> {
        self.check(req)?;
        let h = req.headers();
        let fetch_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if fetch_site.is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
            return Err(Denied::CrossOrigin);
        }
        if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            if origin_host.is_none() || origin_host != host {
                return Err(Denied::CrossOrigin);
            }
            return Ok(());
        }
        let same_origin = fetch_site.is_some_and(|v| v.eq_ignore_ascii_case("same-origin"));
        // A bearer token is never sent by a browser on its own: no forgery to fear.
        let bearer_token = self.token.is_some() && bearer(req).is_some();
        if same_origin || bearer_token {
            Ok(())
        } else {
            Err(Denied::CrossOrigin)
        }
    }

    /// Does `candidate` match the configured token?
    pub fn token_matches(&self, candidate: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(candidate.as_bytes(), t.as_bytes()))
    }
}

/// The host name of a `Host` value, lowercase, without port, brackets or a final dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.trim_end_matches('.').to_ascii_lowercase()
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

    fn gate(extra: &str) -> Gate {
        Gate::new(&Config::from_toml_str(extra).unwrap())
    }

    fn open() -> Gate {
        gate("")
    }

    fn with_token() -> Gate {
        gate(&format!("[admin]\ntoken = \"{TOKEN}\""))
    }

    fn loopback() -> TestRequest {
        TestRequest::default()
            .peer_addr("127.0.0.1:5000".parse().unwrap())
            .insert_header(("Host", "127.0.0.1:8080"))
    }

    #[test]
    fn without_a_token_only_direct_loopback_is_served() {
        assert_eq!(open().check(&loopback().to_http_request()), Ok(()));
        let remote = TestRequest::default()
            .peer_addr("192.0.2.1:5000".parse().unwrap())
            .to_http_request();
        assert_eq!(open().check(&remote), Err(Denied::NotLoopback));
        let proxied = loopback()
            .insert_header(("X-Forwarded-For", "192.0.2.1"))
            .to_http_request();
        assert_eq!(open().check(&proxied), Err(Denied::NotLoopback));
    }

    #[test]
    fn with_a_token_it_is_required_everywhere() {
        let t = with_token();
        assert_eq!(t.check(&loopback().to_http_request()), Err(Denied::NoToken));
        let ok = loopback()
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .to_http_request();
        assert_eq!(t.check(&ok), Ok(()));
        let wrong = loopback()
            .insert_header(("Authorization", "Bearer 0123456789abcdeX"))
            .to_http_request();
        assert_eq!(t.check(&wrong), Err(Denied::NoToken));
        let cookie = TestRequest::default()
            .peer_addr("192.0.2.1:5000".parse().unwrap())
            .cookie(actix_web::cookie::Cookie::new(COOKIE, TOKEN))
            .to_http_request();
        assert_eq!(t.check(&cookie), Ok(()));
    }

    #[test]
    fn only_this_hubs_host_names_are_answered() {
        let host = |h: &str| loopback().insert_header(("Host", h)).to_http_request();
        let g = open(); // listens on 127.0.0.1
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "localhost.:1",
        ] {
            assert_eq!(g.check(&host(ok)), Ok(()), "{ok}");
        }
        for refused in ["rebind.evil.example:8080", "127.0.0.2:8080", "[::1]:8080"] {
            assert!(
                matches!(g.check(&host(refused)), Err(Denied::WrongHost(_))),
                "{refused}"
            );
        }
        let public =
            gate("[server]\nlisten = \"0.0.0.0:80\"\npublic_url = \"https://Hub.Example/\"");
        for ok in [
            "hub.example",
            "hub.example:443",
            "192.0.2.5",
            "[2001:db8::1]:80",
        ] {
            assert_eq!(public.check(&host(ok)), Ok(()), "{ok}");
        }
        assert!(public.check(&host("evil.example")).is_err());
        assert_eq!(
            public.check(&host("evil.example")).unwrap_err().status(),
            421
        );
    }

    #[test]
    fn actions_must_be_same_origin() {
        let g = open();
        let same = loopback()
            .insert_header(("Origin", "http://127.0.0.1:8080"))
            .to_http_request();
        assert_eq!(g.check_action(&same), Ok(()));
        let fetch_same = loopback()
            .insert_header(("Sec-Fetch-Site", "same-origin"))
            .to_http_request();
        assert_eq!(g.check_action(&fetch_same), Ok(()));
        let other = loopback()
            .insert_header(("Origin", "http://evil.example"))
            .to_http_request();
        assert_eq!(g.check_action(&other), Err(Denied::CrossOrigin));
        let fetch = loopback()
            .insert_header(("Sec-Fetch-Site", "cross-site"))
            .to_http_request();
        assert_eq!(g.check_action(&fetch), Err(Denied::CrossOrigin));
        // Saying nothing about where it comes from is not enough…
        assert_eq!(
            g.check_action(&loopback().to_http_request()),
            Err(Denied::CrossOrigin)
        );
        // …unless the token comes as a bearer header, which browsers never add themselves.
        let script = loopback()
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .to_http_request();
        assert_eq!(with_token().check_action(&script), Ok(()));
    }
}
