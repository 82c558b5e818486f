//! The status and diagnostics page: `GET /` (and `/admin/topic`, `/admin/callback`), rendered on
//! the server, small enough for a phone; the totals refresh themselves every few seconds from
//! the admin API. Actions (dead-letter replay, sign-in) are plain form posts answered with a
//! redirect. Who may see it: [`super::admin_auth`]. Everything shown is escaped; secrets are
//! never shown.

// Early answers are returned as `Err(HttpResponse)`, the usual actix-web shape; the size of a
// response on that path does not matter.
#![allow(clippy::result_large_err)]

use std::fmt::Write as _;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::admin_api::{LookupQuery, lookup_url};
use super::admin_auth::{COOKIE, Denied};
use crate::admin::{CallbackInfo, DestinationInfo, Overview, TopicInfo};
use crate::storage::DeadLetter;

/// Destinations and dead letters listed on the page.
const LISTED: usize = 100;
/// Dead letters one click on "Replay all" replays (as many as one API call).
const REPLAY_ALL: usize = 1_000;

const STYLE: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:8px 12px;color:#222}
h1{font-size:1.3em;margin:.3em 0}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #ddd}
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid #ddd;border-radius:6px;padding:6px 10px;min-width:120px}
.card b{display:block;font-size:1.4em}.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.92em}td,th{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
td{overflow-wrap:normal}td.url{overflow-wrap:anywhere;min-width:9em}button,td.state{white-space:nowrap}.dead{color:#b00020;font-weight:bold}.throttled{color:#b26a00;font-weight:bold}.healthy{color:#137333}
.failed{color:#b00020}.delivered{color:#137333}form.inline{display:inline}
input[type=url],input[type=text],input[type=password]{width:100%;max-width:520px;box-sizing:border-box;padding:4px}
label{display:block;margin:.3em 0}.note{color:#666;font-size:.9em}.flash{background:#e6f4ea;padding:6px 10px;border-radius:6px}
";

const SCRIPT: &str = r#"// Refreshes the totals of the status page.
(function () {
  function fmt(k, v) { return k === "deliveries_per_second" ? v.toFixed(1) : String(v); }
  function tick() {
    fetch("/admin/api/status", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        var flat = Object.assign({}, s, {
          delivered: s.deliveries.delivered, failed: s.deliveries.failed,
          healthy: s.destinations.healthy, throttled: s.destinations.throttled,
          dead: s.destinations.dead
        });
        document.querySelectorAll("[data-k]").forEach(function (el) {
          var k = el.getAttribute("data-k");
          if (k in flat) el.textContent = fmt(k, flat[k]);
        });
      })
      .catch(function () {});
  }
  setInterval(tick, 5000);
})();
"#;

pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn url_arg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(super) fn when(ms: u64) -> String {
    crate::clock::format_utc(ms)
}

pub(super) fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}\
         <script src=\"/admin/page.js\"></script></body></html>",
        esc(title)
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(html)
}

/// Storage failed: `503` with the reason.
fn unavailable(e: impl std::fmt::Display) -> HttpResponse {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "hubcast",
        &format!("<p>storage: {}</p>", esc(&e.to_string())),
    )
}

pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(SCRIPT)
}

/// The public notice, and a sign-in form when a token is configured.
fn notice(state: &AppState, status: StatusCode, denied: Option<&Denied>) -> HttpResponse {
    let mut body = format!(
        "<h1>hubcast</h1><p>hubcast WebSub hub at {}</p>\
         <p>POST hub.mode=subscribe|unsubscribe|publish to this URL.</p>",
        esc(&state.hub_url)
    );
    match denied {
        Some(Denied::NoToken) => body.push_str(
            "<h2>Status page</h2><form method=post action=\"/admin/login\">\
             <label>Admin token <input type=password name=token autocomplete=current-password></label>\
             <button>Sign in</button></form>",
        ),
        Some(d) => {
            let _ = write!(body, "<p class=note>{}</p>", esc(&d.reason()));
        }
        None => {}
    }
    page(status, "hubcast", &body)
}

/// Renders the page for an admin, or the notice (with a status) for anyone else.
fn guard(req: &HttpRequest, state: &AppState) -> Result<(), HttpResponse> {
    state
        .admin_gate
        .check(req)
        .map_err(|d| notice(state, d.status(), Some(&d)))
}

pub(super) fn header_html(state: &AppState) -> String {
    format!(
        "<h1><a href=\"/\">hubcast</a> status</h1><p class=note>Hub URL {} · \
         <a href=\"/metrics\">metrics</a> · <a href=\"/admin/api/status\">API</a></p>",
        esc(&state.hub_url)
    )
}

fn totals_html(o: &Overview) -> String {
    let cards = [
        ("topics", "topics", o.topics.to_string()),
        (
            "subscriptions",
            "subscriptions",
            o.subscriptions.to_string(),
        ),
        (
            "deliveries_per_second",
            "deliveries/s",
            format!("{:.1}", o.deliveries_per_second),
        ),
        ("delivered", "delivered", o.deliveries.delivered.to_string()),
        ("failed", "failed attempts", o.deliveries.failed.to_string()),
        ("queued_jobs", "queued jobs", o.queued_jobs.to_string()),
        (
            "pending_retries",
            "pending retries",
            o.pending_retries.to_string(),
        ),
        ("dead_letters", "dead letters", o.dead_letters.to_string()),
        (
            "healthy",
            "healthy destinations",
            o.destinations.healthy.to_string(),
        ),
        (
            "throttled",
            "throttled",
            o.destinations.throttled.to_string(),
        ),
        ("dead", "dead destinations", o.destinations.dead.to_string()),
        ("log_lead", "event log lead", o.log_lead.to_string()),
        ("log_trail", "event log trail", o.log_trail.to_string()),
    ];
    let mut s = String::from("<h2 id=totals>Totals</h2><div class=cards>");
    for (key, label, value) in cards {
        let _ = write!(
            s,
            "<div class=card id=\"total-{key}\"><b data-k=\"{key}\">{value}</b>{label}</div>"
        );
    }
    s.push_str("</div>");
    let r = &o.retention;
    let _ = write!(
        s,
        "<p class=note id=retention>Event log: events {} to {} kept ({} events, {} bytes); \
         retention {} or {} bytes, whichever comes first.</p>",
        o.log_trail,
        o.log_lead,
        o.log_events,
        o.log_bytes,
        humantime::format_duration(std::time::Duration::from_secs(r.max_age_seconds)),
        r.max_bytes
    );
    if let Some(f) = &o.storage_failing {
        let _ = write!(
            s,
            "<p class=flash id=storage-failing>Storage failing since {}: {} ({}): {}</p>",
            when(f.since_ms),
            esc(f.what),
            f.class,
            esc(&f.error)
        );
    }
    s
}

fn lookup_html(topic: &str, callback: &str) -> String {
    format!(
        "<h2 id=lookup>Look up</h2>\
         <form method=get action=\"/admin/topic\"><label>Topic URL \
         <input type=url name=topic value=\"{}\" required></label><button>Look up topic</button></form>\
         <form method=get action=\"/admin/callback\"><label>Callback URL \
         <input type=url name=callback value=\"{}\" required></label><button>Look up callback</button></form>",
        esc(topic),
        esc(callback)
    )
}

fn secs(d: Option<f64>) -> String {
    d.map(|s| format!("{s:.0} s")).unwrap_or_default()
}

fn destinations_html(list: &[DestinationInfo]) -> String {
    let mut s = String::from("<h2 id=destinations>Destination servers</h2>");
    if list.is_empty() {
        s.push_str("<p class=note>None delivered to since the hub started.</p>");
        return s;
    }
    s.push_str(
        "<div class=scroll><table><tr><th>destination</th><th>state</th><th>last error</th>\
         <th>next probe / resumes in</th><th>window</th><th>failures in a row</th>\
         <th>queued jobs</th></tr>",
    );
    for d in list {
        let last = d
            .last_error
            .as_ref()
            .map(|e| format!("{} ({}, {})", esc(&e.error), e.class, when(e.at_ms)))
            .unwrap_or_default();
        let _ = write!(
            s,
            "<tr class=destination data-destination=\"{name}\"><td class=url>{name}</td>\
             <td class=\"state {state}\">{state}</td><td class=failed>{last}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            secs(d.next_probe_in_seconds.or(d.paused_for_seconds)),
            d.window,
            d.consecutive_failures,
            d.queued_jobs,
            name = esc(&d.destination),
            state = d.state,
        );
    }
    s.push_str("</table></div>");
    s
}

fn dead_letters_html(list: &[DeadLetter], total: u64) -> String {
    let mut s = format!("<h2 id=dead-letters>Dead letters ({total})</h2>");
    if list.is_empty() {
        s.push_str("<p class=note>None.</p>");
        return s;
    }
    s.push_str(
        "<form class=inline method=post action=\"/admin/dead-letters/replay-all\">\
         <button id=replay-all>Replay all</button></form>\
         <div class=scroll><table><tr><th>callback</th><th>last error</th><th></th><th>attempts</th>\
         <th>failed</th><th>topic</th><th>id</th></tr>",
    );
    for d in list {
        let _ = write!(
            s,
            "<tr class=dead-letter data-id=\"{id}\"><td class=url><a href=\"/admin/callback?callback={}\">{}</a></td>\
             <td class=failed>{}</td><td><form class=inline method=post action=\"/admin/dead-letters/{id}/replay\">\
             <button class=replay>Replay</button></form></td><td>{}</td><td>{}</td><td class=url>{}</td><td>{id}</td></tr>",
            url_arg(&d.callback),
            esc(&d.callback),
            esc(&d.last_error),
            d.attempts,
            when(d.failed_ms),
            esc(&d.topic),
            id = d.id,
        );
    }
    s.push_str("</table></div>");
    s
}

fn debug_forms_html() -> String {
    "<h2 id=debug>Debug</h2>\
     <p class=note>These post to the hub endpoint like any subscriber or publisher would; \
     the answer is the hub's own (202 Accepted, or an error with its reason).</p>\
     <form method=post action=\"/\"><label>Mode <select name=\"hub.mode\">\
     <option>subscribe</option><option>unsubscribe</option></select></label>\
     <label>Topic <input type=url name=\"hub.topic\" required></label>\
     <label>Callback <input type=url name=\"hub.callback\" required></label>\
     <label>Lease seconds <input type=text name=\"hub.lease_seconds\" inputmode=numeric></label>\
     <button>Send subscription request</button></form>\
     <form method=post action=\"/\"><input type=hidden name=\"hub.mode\" value=publish>\
     <label>Topic <input type=url name=\"hub.url\" required></label>\
     <button>Send publish ping</button></form>\
     <h3 id=names>Follow a name</h3>\
     <p class=note>A name like user@example.org is looked up with WebFinger (redirects followed); \
     with a callback, a subscribe request for it goes to the hub it names.</p>\
     <form method=post action=\"/admin/resolve\"><label>Name <input type=text name=name required \
     placeholder=\"user@example.org\"></label>\
     <label>Callback <input type=url name=callback></label>\
     <button>Resolve</button></form>"
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_dates() {
        assert_eq!(super::when(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::when(1_795_509_296_000), "2026-11-24 08:34:56Z");
        assert_eq!(super::when(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}

#[derive(Deserialize)]
pub struct DashboardQuery {
    replayed: Option<u64>,
}

/// `GET /` without `hub.topic`: the dashboard for admins, the notice for everyone else.
pub async fn dashboard(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(d) = state.admin_gate.check(&req) {
        // The public URL always answers: a notice, with the sign-in form when there is a token.
        let shown = (d == Denied::NoToken).then_some(&d);
        return notice(&state, StatusCode::OK, shown);
    }
    let q = web::Query::<DashboardQuery>::from_query(req.query_string()).ok();
    let admin = &state.admin;
    let data = async {
        let overview = admin.overview().await?;
        let dead = admin.dead_letters(LISTED).await?;
        Ok::<_, crate::storage::StorageError>((overview, dead))
    };
    let (overview, dead) = match data.await {
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let mut body = header_html(&state);
    if let Some(n) = q.and_then(|q| q.replayed) {
        let _ = write!(
            body,
            "<p class=flash id=flash>{n} dead letter(s) replayed: they are retried now.</p>"
        );
    }
    body.push_str(&totals_html(&overview));
    body.push_str(&lookup_html("", ""));
    body.push_str(&destinations_html(&admin.destinations(LISTED)));
    body.push_str(&super::status_relay::relay_html(
        &state.engine.relay_view().await,
    ));
    match super::status_cluster::view(&state).await {
        Ok(v) => body.push_str(&super::status_cluster::cluster_html(&v)),
        Err(e) => return unavailable(e),
    }
    body.push_str(&dead_letters_html(&dead, overview.dead_letters));
    body.push_str(&debug_forms_html());
    page(StatusCode::OK, "hubcast status", &body)
}

fn topic_html(t: &TopicInfo) -> String {
    let mut s = format!(
        "<h2 id=topic>Topic {}</h2><p>subscribers: <b id=topic-subscribers>{}</b><br>last fetch: {}</p>",
        esc(&t.topic),
        t.subscribers,
        match (&t.last_result, t.last_fetch_ms) {
            (Some(r), Some(ms)) => format!("{} at {}", esc(r), when(ms)),
            _ => "never".to_owned(),
        }
    );
    s.push_str("<h2>Recent events</h2>");
    if t.recent_events.is_empty() {
        s.push_str("<p class=note>None kept (the event log has pruned them, or nothing was published).</p>");
    } else {
        s.push_str("<table><tr><th>event</th><th>created</th><th>type</th><th>bytes</th></tr>");
        for e in &t.recent_events {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.seq,
                when(e.created_ms),
                esc(&e.content_type),
                e.bytes
            );
        }
        s.push_str("</table>");
    }
    let _ = write!(
        s,
        "<h2>Subscriptions (first {})</h2>",
        crate::admin::TOPIC_SUBSCRIPTIONS
    );
    s.push_str("<div class=scroll><table><tr><th>callback</th><th>state</th><th>lease ends</th><th>secret</th></tr>");
    for sub in &t.subscriptions {
        let _ = write!(
            s,
            "<tr><td class=url><a href=\"/admin/callback?callback={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url_arg(&sub.callback),
            esc(&sub.callback),
            sub.state,
            when(sub.expires_ms),
            if sub.has_secret { "yes" } else { "no" }
        );
    }
    s.push_str("</table></div>");
    s.push_str(&verifications_html(&t.recent_verifications, "callback"));
    s
}

/// Recent verifications (a topic's or a callback's), with reasons and hints; `other` names the
/// column showing the other side (`callback` on a topic's page, `topic` on a callback's).
fn verifications_html(list: &[crate::engine::history::VerificationRecord], other: &str) -> String {
    let mut s = String::from("<h2>Last verifications</h2>");
    if list.is_empty() {
        s.push_str("<p class=note>None since the hub started.</p>");
        return s;
    }
    let _ = write!(
        s,
        "<div class=scroll><table id=verifications><tr><th>when</th><th>request</th>\
         <th>outcome</th><th>reason</th><th>{other}</th></tr>"
    );
    for v in list {
        let reason = match (&v.reason, &v.hint) {
            (Some(r), Some(h)) => format!("{} — {}", esc(r), esc(h)),
            (Some(r), None) => esc(r),
            _ => String::new(),
        };
        let shown = if other == "topic" {
            &v.topic
        } else {
            &v.callback
        };
        let _ = write!(
            s,
            "<tr class=verification><td>{}</td><td>{}</td><td class=\"{o}\">{o}</td><td class=failed>{}</td><td class=url>{}</td></tr>",
            when(v.at_ms),
            v.mode,
            reason,
            esc(shown),
            o = v.outcome,
        );
    }
    s.push_str("</table></div>");
    s
}

fn callback_html(c: &CallbackInfo) -> String {
    let mut s = format!("<h2 id=callback>Callback {}</h2>", esc(&c.callback));
    if c.subscriptions.is_empty() {
        s.push_str("<p id=no-subscriptions>No active subscription.</p>");
    } else {
        s.push_str("<div class=scroll><table><tr><th>topic</th><th>state</th><th>lease ends</th><th>secret</th></tr>");
        for sub in &c.subscriptions {
            let _ = write!(
                s,
                "<tr class=subscription><td class=url><a href=\"/admin/topic?topic={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                url_arg(&sub.topic),
                esc(&sub.topic),
                sub.state,
                when(sub.expires_ms),
                if sub.has_secret { "yes" } else { "no" }
            );
        }
        s.push_str("</table></div>");
    }
    for v in &c.pending_verifications {
        let _ = write!(
            s,
            "<p>Pending verification: {} to {} (requested {})</p>",
            v.mode,
            esc(&v.topic),
            when(v.requested_ms)
        );
    }
    s.push_str(&verifications_html(&c.recent_verifications, "topic"));
    if let Some(d) = &c.destination {
        s.push_str(&destinations_html(std::slice::from_ref(d)));
    }
    s.push_str("<h2>Last deliveries</h2>");
    if c.recent_deliveries.is_empty() {
        s.push_str("<p class=note>None since the hub started.</p>");
    } else {
        s.push_str(
            "<div class=scroll><table id=deliveries><tr><th>when</th><th>outcome</th>\
             <th>error</th><th>latency</th><th>event</th><th>topic</th></tr>",
        );
        for d in &c.recent_deliveries {
            let _ = write!(
                s,
                "<tr class=delivery><td>{}</td><td class=\"{o}\">{o}</td><td class=failed>{}</td><td>{}</td><td>{}</td><td class=url>{}</td></tr>",
                when(d.at_ms),
                d.error.as_deref().map(esc).unwrap_or_default(),
                d.latency_ms
                    .map(|l| format!("{l:.1} ms"))
                    .unwrap_or_default(),
                d.event,
                esc(&d.topic),
                o = d.outcome,
            );
        }
        s.push_str("</table></div>");
    }
    if !c.pending_retries.is_empty() {
        s.push_str("<h2>Pending retries</h2><div class=scroll><table><tr><th>event</th><th>topic</th><th>attempts</th><th>due</th><th>last error</th></tr>");
        for r in &c.pending_retries {
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=url>{}</td><td>{}</td><td>{}</td><td class=failed>{}</td></tr>",
                r.event,
                esc(&r.topic),
                r.attempts,
                when(r.due_ms),
                esc(&r.last_error)
            );
        }
        s.push_str("</table></div>");
    }
    if !c.dead_letters.is_empty() {
        s.push_str(&dead_letters_html(
            &c.dead_letters,
            c.dead_letters.len() as u64,
        ));
    }
    s
}

fn parse_url_field(name: &str, v: Option<&str>) -> Result<String, HttpResponse> {
    lookup_url(name, v).map_err(|reason| {
        page(
            StatusCode::BAD_REQUEST,
            "hubcast",
            &format!("<h1><a href=\"/\">hubcast</a></h1><p>{}</p>", esc(&reason)),
        )
    })
}

pub async fn topic(
    req: HttpRequest,
    q: web::Query<LookupQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = guard(&req, &state) {
        return r;
    }
    let topic = match parse_url_field("topic", q.topic.as_deref()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.admin.topic(&topic).await {
        Ok(t) => {
            let mut body = header_html(&state);
            body.push_str(&lookup_html(&topic, ""));
            body.push_str(&topic_html(&t));
            page(StatusCode::OK, "hubcast topic", &body)
        }
        Err(e) => unavailable(e),
    }
}

pub async fn callback(
    req: HttpRequest,
    q: web::Query<LookupQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = guard(&req, &state) {
        return r;
    }
    let callback = match parse_url_field("callback", q.callback.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.admin.callback(&callback).await {
        Ok(c) => {
            let mut body = header_html(&state);
            body.push_str(&lookup_html("", &callback));
            body.push_str(&callback_html(&c));
            page(StatusCode::OK, "hubcast callback", &body)
        }
        Err(e) => unavailable(e),
    }
}

pub(super) fn action_guard(req: &HttpRequest, state: &AppState) -> Result<(), HttpResponse> {
    state
        .admin_gate
        .check_action(req)
        .map_err(|d| notice(state, d.status(), Some(&d)))
}

fn back_to_dashboard(replayed: usize) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            format!("/?replayed={replayed}#dead-letters"),
        ))
        .finish()
}

pub async fn replay(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = action_guard(&req, &state) {
        return r;
    }
    let Ok(id) = id.parse::<u64>() else {
        return page(
            StatusCode::BAD_REQUEST,
            "hubcast",
            "dead letter id must be a number",
        );
    };
    match state.admin.replay(id).await {
        Ok(r) => back_to_dashboard(usize::from(r.is_some())),
        Err(e) => unavailable(e),
    }
}

pub async fn replay_all(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(r) = action_guard(&req, &state) {
        return r;
    }
    match state.admin.replay_all(REPLAY_ALL).await {
        Ok(n) => back_to_dashboard(n),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

/// Signs in with the admin token: sets the cookie and goes to the dashboard.
pub async fn login(
    req: HttpRequest,
    form: web::Form<Login>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(d) = state.admin_gate.check_host(&req) {
        return notice(&state, d.status(), Some(&d));
    }
    if !state.admin_gate.token_matches(form.token.trim()) {
        return notice(&state, StatusCode::UNAUTHORIZED, Some(&Denied::NoToken));
    }
    let secure = req.connection_info().scheme() == "https" || state.hub_url.starts_with("https://");
    let cookie = actix_web::cookie::Cookie::build(COOKIE, form.token.trim().to_owned())
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(actix_web::cookie::SameSite::Strict)
        .finish();
    HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, "/"))
        .finish()
}
