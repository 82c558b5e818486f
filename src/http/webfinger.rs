//! `GET /.well-known/webfinger` (RFC 7033): a hosted topic's name (`acct:NAME@DOMAIN`, or one of
//! its URLs) → a JRD linking its profile page, Atom and JSON feeds and hub, and, when those doors
//! are on, its mail addresses (post, follow) and newsgroup. `400` without
//! `resource`, `404` for anything else; `rel` filters the links; any origin may read it (CORS).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::{AppState, text};

pub const MEDIA_TYPE: &str = "application/jrd+json";
pub const PROFILE_PAGE: &str = "http://webfinger.net/rel/profile-page";
pub const UPDATES_FROM: &str = "http://schemas.google.com/g/2010#updates-from";

/// The domain of this hub's `acct:` names: `webfinger.domain`, else the hub URL's host (and
/// port, when it is not the scheme's).
pub fn domain(state: &AppState) -> Option<String> {
    if let Some(d) = &state.cfg.webfinger.domain {
        return Some(d.clone());
    }
    let url = url::Url::parse(&state.hub_url).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// The other doors of a hosted topic, when they are on: its mail address (to post; `+subscribe`
/// to follow by mail) and its newsgroup URL.
pub fn doors(state: &AppState, name: &str) -> (Option<String>, Option<String>, Option<String>) {
    let cfg = &state.cfg;
    let mail = cfg
        .lmtp
        .enabled
        .then(|| format!("{name}@{}", cfg.lmtp.domain));
    let subscribe = (cfg.lmtp.enabled && cfg.smtp.enabled)
        .then(|| format!("{name}+subscribe@{}", cfg.lmtp.domain));
    let news = cfg.nntp.enabled.then(|| {
        let host = cfg.nntp.path_host.clone().unwrap_or_else(|| {
            url::Url::parse(&state.hub_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "localhost".into())
        });
        let port = match cfg.nntp.listen.port() {
            119 | 0 => String::new(),
            p => format!(":{p}"),
        };
        format!("news://{host}{port}/{}.{name}", cfg.nntp.group_prefix)
    });
    (mail, subscribe, news)
}

/// A hosted topic's `acct:` name, when names are on.
pub fn acct(state: &AppState, name: &str) -> Option<String> {
    if !state.cfg.webfinger.enabled {
        return None;
    }
    Some(format!("acct:{name}@{}", domain(state)?))
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    let mut r = text(status, message);
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    r
}

/// The hosted topic a resource names.
fn topic_name(state: &AppState, resource: &str) -> Option<String> {
    let urls = super::hosted::urls(state);
    if let Some(acct) = resource.strip_prefix("acct:") {
        let acct = percent_encoding::percent_decode_str(acct)
            .decode_utf8()
            .ok()?;
        let (name, host) = acct.rsplit_once('@')?;
        let ours = domain(state)?;
        return (host.eq_ignore_ascii_case(&ours)).then(|| name.to_ascii_lowercase());
    }
    if let Some((name, _)) = urls.topic_of(resource) {
        return Some(name.to_owned());
    }
    let profile_prefix = urls.profile("");
    resource
        .strip_prefix(profile_prefix.as_str())
        .filter(|n| crate::hosted::valid_name(n).is_ok())
        .map(str::to_owned)
}

pub async fn webfinger(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !state.cfg.webfinger.enabled {
        return error(
            StatusCode::NOT_FOUND,
            "names are off on this hub (webfinger.enabled is false)",
        );
    }
    let pairs = match crate::form::parse(req.query_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut resources = pairs.iter().filter(|(k, _)| k == "resource");
    let Some((_, resource)) = resources.next() else {
        return error(
            StatusCode::BAD_REQUEST,
            "the resource parameter is required",
        );
    };
    if resources.next().is_some() {
        return error(StatusCode::BAD_REQUEST, "give one resource parameter");
    }
    let rels: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "rel")
        .map(|(_, v)| v.as_str())
        .collect();
    let Some(name) = topic_name(&state, resource.trim()) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{resource:?} is not known here"),
        );
    };
    let topic = match state.store.hosted.hosted(&name).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("{resource:?} is not known here"),
            );
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let urls = super::hosted::urls(&state);
    let atom = urls.atom(&topic.name);
    let links: Vec<Value> = [
        json!({"rel": PROFILE_PAGE, "type": "text/html", "href": urls.profile(&topic.name)}),
        json!({"rel": "alternate", "type": "application/atom+xml", "href": atom}),
        json!({"rel": "alternate", "type": "application/feed+json", "href": urls.json(&topic.name)}),
        json!({"rel": UPDATES_FROM, "type": "application/atom+xml", "href": atom}),
        json!({"rel": "hub", "href": urls.hub()}),
    ]
    .into_iter()
    .chain({
        let (mail, subscribe, news) = doors(&state, &topic.name);
        let mut more = Vec::new();
        if let Some(m) = mail {
            more.push(json!({"rel": "alternate", "href": format!("mailto:{m}"), "titles": {"und": "post by mail"}}));
        }
        if let Some(m) = subscribe {
            more.push(json!({"rel": "alternate", "href": format!("mailto:{m}"), "titles": {"und": "follow by mail"}}));
        }
        if let Some(n) = news {
            more.push(json!({"rel": "alternate", "href": n, "titles": {"und": "newsgroup"}}));
        }
        more
    })
    .filter(|l| rels.is_empty() || rels.iter().any(|r| l["rel"] == *r))
    .collect();
    let subject = acct(&state, &topic.name).unwrap_or_else(|| resource.clone());
    let jrd = json!({
        "subject": subject,
        "aliases": [urls.profile(&topic.name), atom],
        "links": links,
    });
    HttpResponse::Ok()
        .content_type(MEDIA_TYPE)
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(serde_json::to_vec(&jrd).expect("JSON values serialise"))
}
