//! A hosted topic's pages for people: the profile page `/@{name}` (recent entries and every way
//! to follow) and one entry's page. Entry HTML was sanitised when it was taken; text is escaped.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::status_page::esc;
use super::{AppState, text};
use crate::hosted::{Urls, rfc3339};
use crate::storage::hosted::{ContentKind, EntryRange, HostedEntry, HostedTopic};

/// Entries the profile page shows.
const RECENT: usize = 20;

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem}\
article{border-top:1px solid #ddd;padding:.5rem 0}time{color:#666;font-size:.85rem}\
dt{font-weight:600}code{background:#f4f4f4;padding:0 .2rem}";

fn content_html(e: &HostedEntry) -> String {
    match e.kind {
        ContentKind::Html => e.content.clone(),
        ContentKind::Text => format!("<p style=\"white-space:pre-wrap\">{}</p>", esc(&e.content)),
    }
}

fn article(urls: &Urls, topic: &HostedTopic, e: &HostedEntry) -> String {
    let page = urls.entry(&topic.name, &e.key);
    let title = if e.title.is_empty() {
        String::new()
    } else {
        format!("<h3><a href=\"{}\">{}</a></h3>", esc(&page), esc(&e.title))
    };
    let by = e
        .author
        .as_ref()
        .map(|a| format!(" by {}", esc(&a.name)))
        .unwrap_or_default();
    let reply = e
        .in_reply_to
        .as_ref()
        .map(|r| format!(" · in reply to <code>{}</code>", esc(r)))
        .unwrap_or_default();
    format!(
        "<article id=\"e-{key}\">{title}{content}<p><time datetime=\"{date}\"><a href=\"{page}\">{date}</a></time>{by}{reply}</p></article>",
        key = esc(&e.key),
        content = content_html(e),
        date = rfc3339(e.updated_ms),
        page = esc(&page),
    )
}

fn head(title: &str, urls: &Urls, topic: &HostedTopic) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
<meta name=\"viewport\" content=\"width=device-width\">\
<link rel=\"alternate\" type=\"application/atom+xml\" href=\"{atom}\">\
<link rel=\"alternate\" type=\"application/feed+json\" href=\"{json}\">\
<link rel=\"hub\" href=\"{hub}\"><style>{STYLE}</style></head><body>",
        title = esc(title),
        atom = esc(&urls.atom(&topic.name)),
        json = esc(&urls.json(&topic.name)),
        hub = esc(&urls.hub()),
    )
}

/// `GET /@{name}`.
pub async fn profile(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    if !state.cfg.webfinger.enabled && !state.cfg.hosted.enabled {
        return text(StatusCode::NOT_FOUND, "this hub hosts no topics");
    }
    let topic = match super::hosted::topic_named(&state, &path).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let entries = match state
        .store
        .hosted
        .hosted_entries(&topic.name, EntryRange::Before(u64::MAX), RECENT)
        .await
    {
        Ok(e) => e,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let urls = super::hosted::urls(&state);
    let mut page = head(&topic.title, &urls, &topic);
    page.push_str(&format!("<h1>{}</h1>", esc(&topic.title)));
    if let Some(acct) = super::webfinger::acct(&state, &topic.name) {
        page.push_str(&format!("<p><code>{}</code></p>", esc(&acct)));
    }
    page.push_str("<h2>Follow</h2><dl>");
    page.push_str(&format!(
        "<dt>WebSub</dt><dd>subscribe to <code>{atom}</code> (or <code>{json}</code>) at the hub <code>{hub}</code></dd>\
<dt>Feed</dt><dd><a href=\"{atom}\">Atom</a> · <a href=\"{json}\">JSON Feed</a> (with archive pages back to the first entry)</dd>",
        atom = esc(&urls.atom(&topic.name)),
        json = esc(&urls.json(&topic.name)),
        hub = esc(&urls.hub()),
    ));
    let (mail, subscribe, news) = super::webfinger::doors(&state, &topic.name);
    if let Some(m) = &subscribe {
        page.push_str(&format!(
            "<dt>Mail</dt><dd>send a mail to <a href=\"mailto:{m}\">{m}</a> (or subscribe <code>mailto:you@example.org</code> at the hub) and follow the link in the answer</dd>",
            m = esc(m)
        ));
    }
    if let Some(m) = &mail {
        page.push_str(&format!(
            "<dt>Post by mail</dt><dd><a href=\"mailto:{m}\">{m}</a></dd>",
            m = esc(m)
        ));
    }
    if let Some(n) = &news {
        page.push_str(&format!(
            "<dt>News</dt><dd><a href=\"{n}\">{n}</a></dd>",
            n = esc(n)
        ));
    }
    page.push_str("</dl><h2>Recent entries</h2>");
    if entries.is_empty() {
        page.push_str("<p>Nothing yet.</p>");
    }
    for e in &entries {
        page.push_str(&article(&urls, &topic, e));
    }
    page.push_str("</body></html>");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:",
        ))
        .body(page)
}

/// One entry's page.
pub fn entry_page(urls: &Urls, topic: &HostedTopic, e: &HostedEntry) -> String {
    let title = if e.title.is_empty() {
        &topic.title
    } else {
        &e.title
    };
    let mut page = head(title, urls, topic);
    page.push_str(&format!(
        "<p><a href=\"{}\">{}</a></p>",
        esc(&urls.profile(&topic.name)),
        esc(&topic.title)
    ));
    page.push_str(&article(urls, topic, e));
    page.push_str("</body></html>");
    page
}
