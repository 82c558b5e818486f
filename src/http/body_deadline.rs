//! A deadline for reading a whole request body (`server.body_timeout`). actix cuts a client
//! that is slow to send its headers; this cuts one that sends headers and then trickles or
//! withholds the body, which would otherwise hold its connection (and a file descriptor) for
//! ever. Such a request is answered `408` with the reason, and its connection is closed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use bytes::Bytes;
use futures_util::Stream;

use super::AppState;

/// The payload, failing once the deadline has passed before its end.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
    done: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    this.expired.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body not received in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let timeout = state
        .as_ref()
        .map_or(Duration::from_secs(10), |s| s.cfg.body_timeout);
    let expired = Arc::new(AtomicBool::new(false));
    let payload = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(timeout)),
        expired: expired.clone(),
        done: false,
    };
    req.set_payload(Payload::from(
        Box::pin(payload) as Pin<Box<dyn Stream<Item = _>>>
    ));
    let res = next.call(req).await;
    if !expired.load(Ordering::Relaxed) {
        return res.map(ServiceResponse::map_into_boxed_body);
    }
    if let Some(state) = &state {
        state
            .engine
            .metrics()
            .refused(crate::metrics::Refusal::BodyTimeout);
    }
    // Whatever the handler made of the failed read, the answer says what happened.
    let request = res?.request().clone();
    let answer = actix_web::HttpResponse::build(StatusCode::REQUEST_TIMEOUT)
        .content_type("text/plain; charset=utf-8")
        .force_close()
        .body(format!(
            "the request body was not received within {} (server.body_timeout)\n",
            humantime::format_duration(timeout)
        ));
    Ok(ServiceResponse::new(request, answer))
}
