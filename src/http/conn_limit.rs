//! At most `server.max_connections_per_client` open connections from one client address
//! (IPv6: one /64). Each connection is counted when it is accepted and uncounted when it closes
//! (a guard kept in the connection's data, dropped with it); a connection over the cap is
//! answered `429` with the reason on its first request, then closed. With `server.body_timeout`
//! and actix's header timeout, a client holding connections open without finishing requests
//! holds at most this many, each for a few seconds.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;

use crate::rate_limit::client_key;

/// Open connections per client address.
pub struct ConnLimit {
    per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Counts one open connection while it lives.
struct Counted {
    limit: Arc<ConnLimit>,
    client: IpAddr,
}

/// Marks a connection over its client's cap.
#[derive(Clone, Copy)]
struct OverCap(usize);

impl ConnLimit {
    /// `per_client` 0: no cap.
    pub fn new(per_client: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            per_client,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For `HttpServer::on_connect`: counts a new plain-TCP connection, or marks it over cap.
    pub fn on_connect(self: &Arc<Self>, conn: &dyn Any, data: &mut Extensions) {
        if self.per_client == 0 {
            return;
        }
        let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let client = client_key(peer.ip());
        let mut open = self.lock();
        let n = open.entry(client).or_insert(0);
        if *n >= self.per_client {
            data.insert(OverCap(self.per_client));
        } else {
            *n += 1;
            data.insert(Counted {
                limit: self.clone(),
                client,
            });
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.limit.lock();
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// Answers requests on a connection over its client's cap with `429`, and closes it.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(&OverCap(cap)) = req.conn_data::<OverCap>() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let answer = actix_web::HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
        .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
        .content_type("text/plain; charset=utf-8")
        .force_close()
        .body(format!(
            "too many open connections from this address (server.max_connections_per_client \
             = {cap}); close some and try again\n"
        ));
    Ok(req.into_response(answer))
}
