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
/// Idle connections kept over all origins (each holds a socket); beyond it a connection is
/// closed when its request is done.
const MAX_IDLE_TOTAL: usize = 4_096;
/// How often the pool drops connections that timed out or that their servers closed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

/// Idle items per key, most recently used last: at most `per_key` for a key and `total` in
/// all, none older than `timeout`; stale ones and empty keys are dropped every [`SWEEP_EVERY`].
struct IdlePool<K, T> {
    by_key: HashMap<K, Vec<(T, Instant)>>,
    count: usize,
    per_key: usize,
    total: usize,
    timeout: Duration,
    swept: Instant,
}

impl<K: std::hash::Hash + Eq, T> IdlePool<K, T> {
    fn new(per_key: usize, total: usize, timeout: Duration) -> IdlePool<K, T> {
        IdlePool {
            by_key: HashMap::new(),
            count: 0,
            per_key: per_key.max(1),
            total,
            timeout,
            swept: Instant::now(),
        }
    }

    /// The most recently used item of `key` that is still usable.
    fn take(&mut self, key: &K, usable: impl Fn(&T) -> bool) -> Option<T> {
        let idle = self.by_key.get_mut(key)?;
        let mut found = None;
        while let Some((item, since)) = idle.pop() {
            self.count -= 1;
            if since.elapsed() < self.timeout && usable(&item) {
                found = Some(item);
                break;
            }
        }
        if idle.is_empty() {
            self.by_key.remove(key);
        }
        found
    }

    /// Keeps `item` for reuse if there is room (dropped otherwise), and now and then sweeps.
    fn put(&mut self, key: K, item: T, usable: impl Fn(&T) -> bool) {
        if self.swept.elapsed() >= SWEEP_EVERY {
            self.sweep(&usable);
        }
        if self.count >= self.total {
            return;
        }
        let idle = self.by_key.entry(key).or_default();
        if idle.len() < self.per_key {
            idle.push((item, Instant::now()));
            self.count += 1;
        }
    }

    fn sweep(&mut self, usable: impl Fn(&T) -> bool) {
        let timeout = self.timeout;
        self.by_key.retain(|_, idle| {
            idle.retain(|(item, since)| since.elapsed() < timeout && usable(item));
            !idle.is_empty()
        });
        self.count = self.by_key.values().map(Vec::len).sum();
        self.swept = Instant::now();
    }
}

type Sender = SendRequest<Full<Bytes>>;

fn ready(s: &Sender) -> bool {
    s.is_ready()
}

/// What a delivery's answer says.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    /// The answer's body, when it was read whole (at most 64 KiB).
    pub body: Vec<u8>,
}

pub struct LeanClient {
    policy: Policy,
    connect_timeout: Duration,
    tls: TlsConnector,
    /// Idle connections per origin.
    pool: Mutex<IdlePool<Origin, Sender>>,
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
            pool: Mutex::new(IdlePool::new(max_idle, MAX_IDLE_TOTAL, IDLE_TIMEOUT)),
        })
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, IdlePool<Origin, Sender>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut read = Vec::new();
        let mut whole = true;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    let data = f.data_ref().map_or(&[][..], |d| &d[..]);
                    if read.len() + data.len() > MAX_ANSWER_BODY {
                        whole = false; // not worth reading: the connection goes
                        break;
                    }
                    read.extend_from_slice(data);
                }
                Err(_) => {
                    whole = false;
                    break;
                }
            }
        }
        if whole {
            self.checkin(origin, sender);
        } else {
            read.clear();
        }
        Ok(Answer {
            status,
            retry_after,
            body: read,
        })
    }

    fn checkout(&self, origin: &Origin) -> Option<Sender> {
        self.pool().take(origin, ready)
    }

    fn checkin(&self, origin: Origin, sender: Sender) {
        if sender.is_ready() {
            self.pool().put(origin, sender, ready);
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

    #[tokio::test(start_paused = true)]
    async fn the_idle_pool_is_bounded_per_key_in_all_and_in_time() {
        let yes = |_: &u32| true;
        let mut p: IdlePool<&str, u32> = IdlePool::new(2, 3, Duration::from_secs(30));
        for i in 0..3 {
            p.put("a", i, yes);
        }
        p.put("b", 10, yes);
        p.put("c", 20, yes); // over the total: dropped
        assert_eq!(p.count, 3);
        assert_eq!(p.take(&"a", yes), Some(1), "the most recently used first");
        assert_eq!(p.take(&"c", yes), None);
        // Unusable ones are passed over and dropped; an emptied key goes.
        assert_eq!(p.take(&"a", |_| false), None);
        assert!(!p.by_key.contains_key("a"));
        assert_eq!(p.count, 1);
        // Too old to reuse; and the next put's sweep drops what timed out.
        tokio::time::advance(Duration::from_secs(31)).await;
        p.put("d", 30, yes);
        assert!(!p.by_key.contains_key("b"), "swept");
        assert_eq!(p.count, 1);
        assert_eq!(p.take(&"d", yes), Some(30));
        assert_eq!(p.count, 0);
    }

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
