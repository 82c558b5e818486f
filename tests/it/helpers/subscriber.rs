//! A subscriber double: callbacks that answer verifications as told and record deliveries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::sync::watch;

use super::*;

/// How a subscriber double answers verification GETs.
#[derive(Clone, Debug)]
pub enum Verify {
    Echo,
    Wrong,
    Status(u16),
    Redirect(String),
    /// Record the request, then never answer.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// What a test server saw of one request.
    pub fn of(req: &HttpRequest, body: &[u8]) -> Recorded {
        Recorded {
            method: req.method().to_string(),
            target: req.uri().to_string(),
            query: url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at: std::time::Instant::now(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct SubState {
    verify: Verify,
    /// Statuses for the next deliveries (0: never answer); `usual` when empty.
    replies: VecDeque<u16>,
    usual: u16,
    /// Sent with 429 and 503 answers.
    retry_after: Option<String>,
    /// `Location` of 3xx delivery answers.
    location: String,
    /// How long each delivery answer takes.
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
    requests: Vec<Recorded>,
    /// Body of the next successful delivery answer (then empty again).
    answer_body: Option<String>,
}

/// A subscriber callback server.
#[derive(Clone)]
pub struct Subscriber {
    pub base: String,
    state: Arc<Mutex<SubState>>,
    changed: watch::Receiver<u64>,
}

impl Subscriber {
    pub async fn start() -> Subscriber {
        Subscriber::start_on("127.0.0.1").await
    }

    pub async fn start_on(ip: &str) -> Subscriber {
        let state = Arc::new(Mutex::new(SubState {
            verify: Verify::Echo,
            replies: VecDeque::new(),
            usual: 200,
            retry_after: None,
            location: "http://127.0.0.1:9/elsewhere".to_owned(),
            delay: Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
            requests: Vec::new(),
            answer_body: None,
        }));
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let st = state.clone();
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let st = st.clone();
            let tx = tx.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let st = st.clone();
                let tx = tx.clone();
                async move { answer(&st, &tx, req, body).await }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Subscriber {
            base: format!("http://{addr}"),
            state,
            changed: rx,
        }
    }

    pub fn callback(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn set_verify(&self, v: Verify) {
        self.state.lock().unwrap().verify = v;
    }

    pub fn reply_with(&self, statuses: &[u16]) {
        self.state.lock().unwrap().replies.extend(statuses);
    }

    /// The status of every delivery answer once `reply_with`'s list is used up.
    pub fn usually_reply(&self, status: u16) {
        self.state.lock().unwrap().usual = status;
    }

    /// `Retry-After` value sent with 429 and 503 answers.
    pub fn retry_after(&self, value: &str) {
        self.state.lock().unwrap().retry_after = Some(value.to_owned());
    }

    /// `Location` of 3xx answers to deliveries (by default a closed port).
    pub fn redirect_deliveries_to(&self, location: &str) {
        self.state.lock().unwrap().location = location.to_owned();
    }

    /// Every delivery answer takes this long.
    pub fn answer_after(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Most deliveries ever in progress at once.
    /// The next successful delivery answer carries this body (e.g. a relay's `{"gone": …}`).
    pub fn answer_next_with(&self, body: &str) {
        self.state.lock().unwrap().answer_body = Some(body.to_owned());
    }

    pub fn max_concurrency(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn verifications(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    pub fn deliveries(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    /// Waits until `check` holds over everything recorded so far.
    pub async fn wait<F: Fn(&[Recorded]) -> bool>(&self, what: &str, check: F) -> Vec<Recorded> {
        let mut rx = self.changed.clone();
        let state = self.state.clone();
        let ok = tokio::time::timeout(
            PATIENCE,
            rx.wait_for(|_| check(&state.lock().unwrap().requests)),
        )
        .await;
        assert!(
            ok.is_ok(),
            "timed out waiting for {what}; saw {:#?}",
            self.requests()
        );
        self.requests()
    }

    pub async fn wait_deliveries(&self, n: usize) -> Vec<Recorded> {
        self.wait(&format!("{n} deliveries"), |r| {
            r.iter().filter(|r| r.method == "POST").count() >= n
        })
        .await;
        self.deliveries()
    }

    pub async fn wait_verifications(&self, n: usize) -> Vec<Recorded> {
        self.wait(&format!("{n} verification requests"), |r| {
            r.iter().filter(|r| r.method == "GET").count() >= n
        })
        .await;
        self.verifications()
    }
}

async fn answer(
    st: &Mutex<SubState>,
    tx: &watch::Sender<u64>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let rec = Recorded::of(&req, &body);
    let is_get = rec.method == "GET";
    let challenge = rec.param("hub.challenge").unwrap_or("").to_owned();
    let (verify, reply, delay, retry_after, location) = {
        let mut s = st.lock().unwrap();
        s.requests.push(rec);
        let reply = if is_get {
            200
        } else {
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            let usual = s.usual;
            s.replies.pop_front().unwrap_or(usual)
        };
        (
            s.verify.clone(),
            reply,
            s.delay,
            s.retry_after.clone(),
            s.location.clone(),
        )
    };
    tx.send_modify(|v| *v += 1);
    if !is_get {
        if reply == 0 {
            // 0: accept the delivery and never answer.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(delay).await;
        let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply).unwrap());
        if (300..400).contains(&reply) {
            r.insert_header(("location", location));
        }
        if let (429 | 503, Some(ra)) = (reply, retry_after) {
            r.insert_header(("retry-after", ra));
        }
        let body = {
            let mut s = st.lock().unwrap();
            s.in_flight -= 1;
            if (200..300).contains(&reply) {
                s.answer_body.take()
            } else {
                None
            }
        };
        tx.send_modify(|v| *v += 1);
        return match body {
            Some(b) => r.content_type("application/json").body(b),
            None => r.finish(),
        };
    }
    match verify {
        Verify::Echo => HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge),
        Verify::Wrong => HttpResponse::Ok().body("not-the-challenge"),
        Verify::Status(s) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(s).unwrap()).body(challenge)
        }
        Verify::Redirect(to) => HttpResponse::Found()
            .insert_header(("location", to))
            .finish(),
        Verify::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
