//! The delivery client against servers that test it: keep-alive connections are reused, one
//! the server closed is replaced without a failure, and an https callback whose certificate
//! is not trusted fails as `tls`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

const PUBLISHERS: &str = r#"
[[publishers]]
name = "stream"
topics = ["http://127.0.0.1:1/c/"]
token = "client-token"
"#;

/// A bare HTTP/1.1 server: echoes verification challenges, answers deliveries 204, and
/// records how many deliveries each connection carried. With `close_after_answer` it closes
/// every connection right after answering a delivery (as a server with a short keep-alive
/// does), without saying so in the answer.
struct Bare {
    port: u16,
    /// Deliveries per connection that carried any.
    posts: Arc<Mutex<Vec<usize>>>,
}

impl Bare {
    async fn start(close_after_answer: bool) -> Bare {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let p = posts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, p.clone(), close_after_answer));
            }
        });
        Bare { port, posts }
    }

    fn callback(&self) -> String {
        format!("http://127.0.0.1:{}/cb", self.port)
    }

    fn posts(&self) -> Vec<usize> {
        self.posts.lock().unwrap().clone()
    }
}

async fn serve(mut s: TcpStream, posts: Arc<Mutex<Vec<usize>>>, close_after_answer: bool) {
    let mut buf = Vec::new();
    let mut slot = None;
    loop {
        // One request: the head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let answer = if head.starts_with("GET ") {
            let url = url::Url::parse(&format!("http://x{target}")).unwrap();
            let challenge = url
                .query_pairs()
                .find(|(k, _)| k == "hub.challenge")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{challenge}",
                challenge.len()
            )
        } else {
            let mut p = posts.lock().unwrap();
            let i = *slot.get_or_insert_with(|| {
                p.push(0);
                p.len() - 1
            });
            p[i] += 1;
            "HTTP/1.1 204 No Content\r\n\r\n".to_owned()
        };
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if close_after_answer && head.starts_with("POST ") {
            return; // dropped: closed without a word
        }
    }
}

async fn deliver_three(hub: &TestHub, topic: &str, bare: &Bare) {
    for i in 1..=3 {
        let r = hub.fat_ping(topic, "client-token", &format!("m{i}")).await;
        assert_eq!(r.status(), 202);
        poll_until("the delivery", PATIENCE, || async {
            (bare.posts().iter().sum::<usize>() == i).then_some(())
        })
        .await;
    }
}

async fn failures(hub: &TestHub) -> Vec<String> {
    let store = hub.store();
    let mut all: Vec<String> = store
        .delivery
        .due_retries(u64::MAX, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.last_error)
        .collect();
    all.extend(
        store
            .delivery
            .dead_letters(100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.last_error),
    );
    all
}

#[tokio::test]
async fn deliveries_to_one_callback_reuse_one_connection() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let bare = Bare::start(false).await;
    let topic = "http://127.0.0.1:1/c/reuse";
    hub.subscribed(topic, &bare.callback()).await;
    deliver_three(&hub, topic, &bare).await;
    assert_eq!(
        bare.posts(),
        [3],
        "three deliveries over one kept-alive connection"
    );
    assert!(failures(&hub).await.is_empty());
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_without_a_failure() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let bare = Bare::start(true).await;
    let topic = "http://127.0.0.1:1/c/closing";
    hub.subscribed(topic, &bare.callback()).await;
    deliver_three(&hub, topic, &bare).await;
    assert_eq!(
        bare.posts(),
        [1, 1, 1],
        "a new connection for each delivery"
    );
    assert!(
        failures(&hub).await.is_empty(),
        "{:?}",
        failures(&hub).await
    );
}

#[tokio::test]
async fn an_https_callback_with_an_untrusted_certificate_fails_as_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cert = CertificateDer::from_pem_slice(include_bytes!("fixtures/self-signed.crt")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/self-signed.key")).unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let h = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let _ = acceptor.accept(stream).await;
        }
    });

    let hub = spawn_hub_with(PUBLISHERS).await;
    // Stored directly: verification over the same untrusted TLS would refuse it.
    let topic = "http://127.0.0.1:1/c/tls";
    let callback = format!("https://127.0.0.1:{port}/cb");
    let now = hub.running().engine.clock().now_ms();
    hub.store()
        .subs
        .upsert(hubcast::storage::Subscription {
            topic: topic.into(),
            callback: callback.clone(),
            destination: hubcast::urls::destination_of_endpoint(&callback),
            secret: None,
            lease_seconds: 3600,
            expires_ms: now + 3_600_000,
            created_ms: now,
        })
        .await
        .unwrap();
    assert_eq!(
        hub.fat_ping(topic, "client-token", "secret").await.status(),
        202
    );
    let errors = poll_until("the failed delivery", PATIENCE, || async {
        let f = failures(&hub).await;
        (!f.is_empty()).then_some(f)
    })
    .await;
    assert!(errors[0].starts_with("tls: "), "{errors:?}");
    assert!(handshakes.load(Ordering::SeqCst) >= 1);
}
