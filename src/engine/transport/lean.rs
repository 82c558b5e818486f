//! A lean HTTP/1.1 client for deliveries: hyper's connection API and a pool of keep-alive
//! connections per origin. It does what a delivery needs and nothing more: no redirects, no
//! cookies, no proxy, no decompression. The callback policy is checked on every address it
//! connects to (after DNS), and the answer's body is read to a bound and thrown away.
//!
//! Written here rather than taken from reqwest because profiles of fan-out put reqwest's
//! per-request layers (its pool, redirect and timeout machinery, header maps, response
//! wrappers) at a large share of a delivery's cost; hyper underneath stays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::engine::client::{Failure, USER_AGENT};
use crate::ssrf::{GuardError, Policy};

/// Most of an answer's body read (and thrown away) before the connection is given up instead.
const MAX_ANSWER_BODY: usize = 64 << 10;

/// A pooled connection unused for this long is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// What a delivery's answer says.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<String>,
}

pub struct LeanClient {
    policy: Policy,
    connect_timeout: Duration,
    tls: TlsConnector,
    /// Idle connections per origin, most recently used last.
    pools: Mutex<HashMap<Origin, Vec<Idle>>>,
    max_idle: usize,
}

impl LeanClient {
    /// `max_idle`: connections kept per origin (the largest window a destination gets).
    pub fn new(
        policy: Policy,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Result<LeanClient, rustls::Error> {
        use rustls_platform_verifier::ConfigVerifierExt;
        let mut tls = rustls::ClientConfig::with_platform_verifier()?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(LeanClient {
            policy,
            connect_timeout,
            tls: TlsConnector::from(Arc::new(tls)),
            pools: Mutex::new(HashMap::new()),
            max_idle: max_idle.max(1),
        })
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Vec<Idle>>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// POSTs `body` with `headers` to `url` (http or https). The caller bounds the whole call
    /// in time. A pooled connection the server had closed meanwhile is replaced by a new one
    /// and the request sent again (it never reached the server).
    pub async fn post(
        &self,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, Failure> {
        let origin = origin(url)?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let host = host_header(url, &origin)?;
        let request = || {
            let mut req = Request::post(target.as_str())
                .header(header::HOST, host.clone())
                .header(header::USER_AGENT, USER_AGENT);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.body(Full::new(body.clone()))
                .map_err(|e| Failure::Other(format!("cannot build the request: {e}")))
        };
        if let Some(mut sender) = self.checkout(&origin) {
            match sender.try_send_request(request()?).await {
                Ok(resp) => return self.finish(origin, sender, resp).await,
                Err(mut e) => {
                    // Closed by the server while idle, before the request was written: a new
                    // connection takes it. Otherwise it may have arrived: not sent again.
                    if e.take_message().is_none() {
                        return Err(Failure::Other(chain(e.error())));
                    }
                }
            }
        }
        let mut sender = self.connect(&origin).await?;
        match sender.send_request(request()?).await {
            Ok(resp) => self.finish(origin, sender, resp).await,
            Err(e) => Err(Failure::Other(chain(&e))),
        }
    }

    /// Reads the answer; a connection whose answer was read to its end goes back to the pool.
    async fn finish(
        &self,
        origin: Origin,
        sender: SendRequest<Full<Bytes>>,
        resp: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Answer, Failure> {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned());
        let mut body = resp.into_body();
        let mut read = 0usize;
        let mut whole = true;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    read += f.data_ref().map_or(0, |d| d.len());
                    if read > MAX_ANSWER_BODY {
                        whole = false; // not worth reading: the connection goes
                        break;
                    }
                }
                Err(_) => {
                    whole = false;
                    break;
                }
            }
        }
        if whole {
            self.checkin(origin, sender);
        }
        Ok(Answer {
            status,
            retry_after,
        })
    }

    fn checkout(&self, origin: &Origin) -> Option<SendRequest<Full<Bytes>>> {
        let mut pools = self.pools();
        let idle = pools.get_mut(origin)?;
        while let Some(c) = idle.pop() {
            if c.since.elapsed() < IDLE_TIMEOUT && c.sender.is_ready() {
                return Some(c.sender);
            }
        }
        None
    }

    fn checkin(&self, origin: Origin, sender: SendRequest<Full<Bytes>>) {
        if !sender.is_ready() {
            return;
        }
        let mut pools = self.pools();
        let idle = pools.entry(origin).or_default();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection: the policy-checked addresses in turn, then TLS for https.
    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let addrs = self
            .policy
            .resolve(&origin.host, origin.port)
            .await
            .map_err(|e| match e {
                GuardError::Blocked(_) => Failure::Blocked(e.to_string()),
                GuardError::Dns(m) => Failure::Dns(m),
            })?;
        let mut last = Failure::Other(format!("no address for {}", origin.host));
        for addr in addrs {
            let tcp =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        last = Failure::Refused;
                        continue;
                    }
                    Ok(Err(e)) => {
                        last = Failure::Other(format!("connect to {addr}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        last = Failure::Timeout;
                        continue;
                    }
                };
            let _ = tcp.set_nodelay(true);
            if !origin.https {
                return handshake(tcp).await;
            }
            let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|e| Failure::Tls(e.to_string()))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| Failure::Tls(tls_error(&e)))?;
            return handshake(tls).await;
        }
        Err(last)
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Other(chain(&e)))?;
    // Ends when the sender is dropped (a connection not pooled) or the server closes it.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn origin(url: &Url) -> Result<Origin, Failure> {
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        s => return Err(Failure::Other(format!("not an HTTP URL: {s}"))),
    };
    let host = match url.host() {
        // Without brackets: this is what the resolver and the TLS name take.
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => return Err(Failure::Other("the callback has no host".into())),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Failure::Other("the callback has no port".into()))?;
    Ok(Origin { https, host, port })
}

fn host_header(url: &Url, origin: &Origin) -> Result<HeaderValue, Failure> {
    let host = url.host_str().unwrap_or(&origin.host);
    let value = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    HeaderValue::from_str(&value).map_err(|e| Failure::Other(format!("bad host: {e}")))
}

/// The error and its causes, for the delivery's recorded failure.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn tls_error(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => t.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_host_headers() {
        let u = Url::parse("https://Example.org/cb?x=1").unwrap();
        let o = origin(&u).unwrap();
        assert_eq!(
            o,
            Origin {
                https: true,
                host: "example.org".into(),
                port: 443
            }
        );
        assert_eq!(host_header(&u, &o).unwrap(), "example.org");
        let u = Url::parse("http://[::1]:8080/cb").unwrap();
        let o = origin(&u).unwrap();
        assert_eq!(o.host, "::1");
        assert_eq!(o.port, 8080);
        assert_eq!(host_header(&u, &o).unwrap(), "[::1]:8080");
        assert!(origin(&Url::parse("ftp://example.org/").unwrap()).is_err());
    }
}
