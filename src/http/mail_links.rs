//! The links in mail: `/mail/confirm?t=TOKEN` (a mail subscription, or its end, confirmed) and
//! `/mail/unsubscribe?t=TOKEN` (in `List-Unsubscribe`). A GET shows what the link does with a
//! button; only a POST acts, so mail scanners that open links change nothing. A POST to the
//! unsubscribe link with `List-Unsubscribe=One-Click` is RFC 8058's one-click unsubscribe.

// Early answers are returned as `Err(HttpResponse)`, the usual actix-web shape.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::status_page::esc;
use super::{AppState, text};
use crate::mail::token::{Action, Claim};

fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'"))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}</style></head>\
<body><h1>{t}</h1>{body}</body></html>",
            t = esc(title)
        ))
}

/// The token's claim, or the page saying why not.
fn claim(
    req: &HttpRequest,
    state: &AppState,
    form: Option<&[u8]>,
) -> Result<(Claim, String), HttpResponse> {
    let Some(mail) = state.engine.mail() else {
        return Err(text(
            StatusCode::NOT_FOUND,
            "this hub sends no mail (smtp.enabled is false)",
        ));
    };
    let mut pairs = crate::form::parse(req.query_string().as_bytes())
        .map_err(|e| text(StatusCode::BAD_REQUEST, e))?;
    if let Some(body) = form {
        pairs.extend(crate::form::parse(body).map_err(|e| text(StatusCode::BAD_REQUEST, e))?);
    }
    let token = pairs
        .iter()
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| text(StatusCode::BAD_REQUEST, "the link has no token (t)"))?;
    let claim = mail
        .signer
        .check(&token, state.clock.now_ms())
        .map_err(|e| {
            page(
                StatusCode::BAD_REQUEST,
                "This link does not work",
                &format!("<p>{}</p>", esc(&e.to_string())),
            )
        })?;
    Ok((claim, token))
}

fn describe(c: &Claim) -> String {
    match c.act {
        Action::Subscribe => format!(
            "<p>Send the updates of <code>{}</code> to <b>{}</b>.</p>",
            esc(&c.topic),
            esc(&c.address)
        ),
        Action::Unsubscribe => format!(
            "<p>Stop sending the updates of <code>{}</code> to <b>{}</b>.</p>",
            esc(&c.topic),
            esc(&c.address)
        ),
    }
}

async fn act(state: &AppState, c: &Claim) -> HttpResponse {
    match state.ingest.mail_confirmed(c).await {
        Ok(_) => {
            let done = match c.act {
                Action::Subscribe => "Subscribed",
                Action::Unsubscribe => "Unsubscribed",
            };
            page(StatusCode::OK, done, &describe(c))
        }
        Err(e) => super::hub_endpoint::unavailable(e),
    }
}

fn button(action: &str, token: &str, label: &str) -> String {
    format!(
        "<form method=post action=\"{action}\"><input type=hidden name=t value=\"{}\"><button>{label}</button></form>",
        esc(token)
    )
}

/// `GET /mail/confirm`: what the link does, and its button.
pub async fn confirm_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match claim(&req, &state, None) {
        Ok((c, token)) => page(
            StatusCode::OK,
            "Confirm",
            &format!(
                "{}{}",
                describe(&c),
                button("/mail/confirm", &token, "Confirm")
            ),
        ),
        Err(r) => r,
    }
}

/// `POST /mail/confirm`.
pub async fn confirm(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    match claim(&req, &state, Some(&body)) {
        Ok((c, _)) => act(&state, &c).await,
        Err(r) => r,
    }
}

/// `GET /mail/unsubscribe`.
pub async fn unsubscribe_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match claim(&req, &state, None) {
        Ok((c, token)) if c.act == Action::Unsubscribe => page(
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "{}{}",
                describe(&c),
                button("/mail/unsubscribe", &token, "Unsubscribe")
            ),
        ),
        Ok(_) => text(StatusCode::BAD_REQUEST, "this is not an unsubscribe link"),
        Err(r) => r,
    }
}

/// `POST /mail/unsubscribe` (the page's button, or RFC 8058 one-click).
pub async fn unsubscribe(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    match claim(&req, &state, Some(&body)) {
        Ok((c, _)) if c.act == Action::Unsubscribe => act(&state, &c).await,
        Ok(_) => text(StatusCode::BAD_REQUEST, "this is not an unsubscribe link"),
        Err(r) => r,
    }
}
