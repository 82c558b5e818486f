//! A publisher double: a topic server that serves documents set by the test and records fetches.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::sync::watch;

use super::*;

struct TopicDoc {
    content_type: String,
    body: Vec<u8>,
    etag: Option<String>,
    /// Answer `302 Found` to this location instead.
    redirect: Option<String>,
    /// Sent as `Content-Encoding` (the body is sent as it is: encoded by the test).
    encoding: Option<String>,
}

/// A publisher's topic server: serves documents set by the test, records fetches.
#[derive(Clone)]
pub struct Publisher {
    pub base: String,
    docs: Arc<Mutex<std::collections::HashMap<String, TopicDoc>>>,
    fetches: Arc<Mutex<Vec<Recorded>>>,
    changed: watch::Receiver<u64>,
}

impl Publisher {
    pub async fn start() -> Publisher {
        let docs: Arc<Mutex<std::collections::HashMap<String, TopicDoc>>> = Arc::default();
        let fetches: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let (d, f) = (docs.clone(), fetches.clone());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let (d, f, tx) = (d.clone(), f.clone(), tx.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (d, f, tx) = (d.clone(), f.clone(), tx.clone());
                async move {
                    let rec = Recorded::of(&req, &[]);
                    let inm = rec.header("if-none-match").map(str::to_owned);
                    f.lock().unwrap().push(rec);
                    tx.send_modify(|v| *v += 1);
                    let docs = d.lock().unwrap();
                    let Some(doc) = docs.get(req.path()) else {
                        return HttpResponse::NotFound().finish();
                    };
                    if let Some(to) = &doc.redirect {
                        return HttpResponse::Found()
                            .insert_header(("location", to.clone()))
                            .finish();
                    }
                    if doc.etag.is_some() && inm == doc.etag {
                        return HttpResponse::NotModified().finish();
                    }
                    let mut r = HttpResponse::Ok();
                    r.insert_header(("content-type", doc.content_type.clone()));
                    if let Some(e) = &doc.etag {
                        r.insert_header(("etag", e.clone()));
                    }
                    if let Some(e) = &doc.encoding {
                        r.insert_header(("content-encoding", e.clone()));
                    }
                    r.body(doc.body.clone())
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Publisher {
            base: format!("http://{addr}"),
            docs,
            fetches,
            changed: rx,
        }
    }

    pub fn topic(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn set(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) {
        self.set_with_etag(path, content_type, body, None);
    }

    pub fn set_with_etag(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
        etag: Option<&str>,
    ) {
        self.docs.lock().unwrap().insert(
            path.to_owned(),
            TopicDoc {
                content_type: content_type.to_owned(),
                body: body.into(),
                etag: etag.map(str::to_owned),
                redirect: None,
                encoding: None,
            },
        );
    }

    /// Serves `encoded` (already encoded) with `Content-Encoding: encoding`.
    pub fn set_encoded(&self, path: &str, content_type: &str, encoding: &str, encoded: Vec<u8>) {
        self.docs.lock().unwrap().insert(
            path.to_owned(),
            TopicDoc {
                content_type: content_type.to_owned(),
                body: encoded,
                etag: None,
                redirect: None,
                encoding: Some(encoding.to_owned()),
            },
        );
    }

    /// `path` answers `302 Found` with `Location: to`.
    pub fn redirect(&self, path: &str, to: &str) {
        self.docs.lock().unwrap().insert(
            path.to_owned(),
            TopicDoc {
                content_type: String::new(),
                body: vec![],
                etag: None,
                redirect: Some(to.to_owned()),
                encoding: None,
            },
        );
    }

    pub fn fetches(&self) -> Vec<Recorded> {
        self.fetches.lock().unwrap().clone()
    }

    pub async fn wait_fetches(&self, n: usize) -> Vec<Recorded> {
        let mut rx = self.changed.clone();
        let f = self.fetches.clone();
        let ok =
            tokio::time::timeout(PATIENCE, rx.wait_for(|_| f.lock().unwrap().len() >= n)).await;
        assert!(ok.is_ok(), "timed out waiting for {n} topic fetches");
        self.fetches()
    }
}

/// An Atom feed with these (id, title) entries, feed-level metadata and a namespace extension.
pub fn atom(entries: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:media=\"http://search.yahoo.com/mrss/\">\n  <title>Blog</title>\n  <id>urn:blog</id>\n  <updated>2026-11-24T00:00:00Z</updated>\n",
    );
    for (id, title) in entries {
        s.push_str(&format!(
            "  <entry>\n    <id>{id}</id>\n    <title>{title}</title>\n    <updated>2026-11-24T00:00:00Z</updated>\n    <media:thumbnail url=\"http://x/{id}.png\"/>\n  </entry>\n"
        ));
    }
    s.push_str("</feed>\n");
    s
}
