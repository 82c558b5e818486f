//! Names to topics: `name@domain` is looked up with WebFinger (RFC 7033) at
//! `https://domain/.well-known/webfinger?resource=acct:name@domain`, following redirects (so a
//! domain can send its WebFinger path to the hub that hosts its names), and the JRD's links give
//! the topic (its Atom `alternate`, else `updates-from`, else its JSON Feed) and the hub. A
//! subscription by name is then an ordinary WebSub subscribe request sent to that hub.
//! Every call goes through the topic client: SSRF-guarded, bounded redirects, time and size caps.

use serde::{Deserialize, Serialize};

/// Largest JRD read.
const MAX_JRD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not a name like user@example.org")]
    Invalid(String),
    #[error("WebFinger lookup at {url} failed: {reason}")]
    Lookup { url: String, reason: String },
    #[error("{url} is not reachable from this hub: {reason}")]
    Blocked { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not answer a JRD: {reason}")]
    NotJrd { url: String, reason: String },
    #[error("{0} names no feed (no alternate Atom or JSON Feed link, no updates-from)")]
    NoTopic(String),
    #[error("{0} names no hub, and its feed could not be used to find one")]
    NoHub(String),
    #[error("the hub {hub} refused the subscription: {status} {reason}")]
    Refused {
        hub: String,
        status: u16,
        reason: String,
    },
}

/// What a name stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub name: String,
    pub subject: String,
    /// The topic to subscribe to.
    pub topic: String,
    pub hub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_feed: Option<String>,
    /// Where the lookup ended, after redirects.
    pub answered_by: String,
}

#[derive(Deserialize)]
struct Jrd {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    links: Vec<JrdLink>,
}

#[derive(Deserialize)]
struct JrdLink {
    rel: String,
    #[serde(default, rename = "type")]
    media_type: Option<String>,
    href: Option<String>,
}

/// `name@domain` (also `acct:name@domain` or `@name@domain`) split in two.
pub fn parse(name: &str) -> Result<(String, String), NameError> {
    let bare = name.trim();
    let bare = bare.strip_prefix("acct:").unwrap_or(bare);
    let bare = bare.strip_prefix('@').unwrap_or(bare);
    let invalid = || NameError::Invalid(name.to_owned());
    let (user, domain) = bare.rsplit_once('@').ok_or_else(invalid)?;
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let user_ok = !user.is_empty()
        && user.len() <= 256
        && !user
            .bytes()
            .any(|b| b.is_ascii_control() || b" /?#@".contains(&b));
    if !domain_ok || !user_ok {
        return Err(invalid());
    }
    Ok((user.to_owned(), domain.to_ascii_lowercase()))
}

/// Looks `name` up: over https, and when `allow_http`, over plain http if https cannot connect.
pub async fn resolve(
    client: &reqwest::Client,
    policy: &crate::ssrf::Policy,
    name: &str,
    allow_http: bool,
) -> Result<Resolved, NameError> {
    let (user, domain) = parse(name)?;
    let resource = format!("acct:{user}@{domain}");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("resource", &resource)
        .finish();
    let schemes: &[&str] = if allow_http {
        &["https", "http"]
    } else {
        &["https"]
    };
    let mut last = None;
    for scheme in schemes {
        let url = format!("{scheme}://{domain}/.well-known/webfinger?{query}");
        match lookup(client, policy, &url).await {
            Ok((jrd, answered_by)) => return interpret(name, jrd, answered_by),
            // Only a failure to connect tries the next scheme; an answer is final.
            Err(e @ NameError::Lookup { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("one scheme at least"))
}

/// An address literal in `url` the policy refuses (host names are checked by the resolver).
fn refused_literal(policy: &crate::ssrf::Policy, url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    policy.check_literal(&parsed).err().map(|e| e.to_string())
}

async fn lookup(
    client: &reqwest::Client,
    policy: &crate::ssrf::Policy,
    url: &str,
) -> Result<(Jrd, String), NameError> {
    let lookup_err = |e: &dyn std::fmt::Display| NameError::Lookup {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    if let Some(why) = refused_literal(policy, url) {
        return Err(NameError::Blocked {
            url: url.to_owned(),
            reason: why,
        });
    }
    let mut resp = client
        .get(url)
        .header("accept", "application/jrd+json, application/json")
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| lookup_err(&crate::engine::client::classify(&e).to_string()))?;
    let answered_by = resp.url().to_string();
    if !resp.status().is_success() {
        return Err(NameError::Status {
            url: answered_by,
            status: resp.status().as_u16(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| lookup_err(&e))? {
        if body.len() + chunk.len() > MAX_JRD {
            return Err(NameError::NotJrd {
                url: answered_by,
                reason: format!("larger than {MAX_JRD} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    let jrd = serde_json::from_slice(&body).map_err(|e| NameError::NotJrd {
        url: answered_by.clone(),
        reason: e.to_string(),
    })?;
    Ok((jrd, answered_by))
}

fn interpret(name: &str, jrd: Jrd, answered_by: String) -> Result<Resolved, NameError> {
    let href = |rel: &str, media: Option<&str>| {
        jrd.links
            .iter()
            .filter(|l| l.rel == rel)
            .filter(|l| media.is_none_or(|m| l.media_type.as_deref() == Some(m)))
            .find_map(|l| l.href.clone())
    };
    let atom = href("alternate", Some("application/atom+xml"));
    let json_feed = href("alternate", Some("application/feed+json"));
    let topic = atom
        .or_else(|| href("http://schemas.google.com/g/2010#updates-from", None))
        .or_else(|| json_feed.clone())
        .ok_or_else(|| NameError::NoTopic(name.to_owned()))?;
    let hub = href("hub", None).ok_or_else(|| NameError::NoHub(name.to_owned()))?;
    Ok(Resolved {
        name: name.to_owned(),
        subject: jrd.subject,
        topic,
        hub,
        profile: href("http://webfinger.net/rel/profile-page", None),
        json_feed,
        answered_by,
    })
}

/// Sends a WebSub subscribe request for `callback` to the hub the name resolved to; the hub
/// then verifies it with the callback as usual.
pub async fn subscribe(
    client: &reqwest::Client,
    policy: &crate::ssrf::Policy,
    r: &Resolved,
    callback: &str,
    secret: Option<&str>,
) -> Result<u16, NameError> {
    if let Some(why) = refused_literal(policy, &r.hub) {
        return Err(NameError::Blocked {
            url: r.hub.clone(),
            reason: why,
        });
    }
    let mut form = vec![
        ("hub.mode", "subscribe"),
        ("hub.topic", r.topic.as_str()),
        ("hub.callback", callback),
    ];
    if let Some(s) = secret {
        form.push(("hub.secret", s));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = client
        .post(&r.hub)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| NameError::Lookup {
            url: r.hub.clone(),
            reason: crate::engine::client::classify(&e).to_string(),
        })?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        let reason: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(NameError::Refused {
            hub: r.hub.clone(),
            status,
            reason: reason.trim().to_owned(),
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_the_usual_spellings() {
        for n in [
            "b@4brad.com",
            "acct:b@4brad.com",
            "@b@4brad.com",
            " b@4BRAD.com ",
        ] {
            assert_eq!(parse(n).unwrap(), ("b".into(), "4brad.com".into()), "{n}");
        }
        assert_eq!(parse("b@127.0.0.2:8080").unwrap().1, "127.0.0.2:8080");
        for bad in ["b", "@4brad.com", "b@", "b@x/y", "a b@x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_jrd_gives_the_atom_feed_and_the_hub() {
        let jrd: Jrd = serde_json::from_str(
            r#"{"subject":"acct:b@x","links":[
              {"rel":"alternate","type":"application/feed+json","href":"https://h/t/b.json"},
              {"rel":"alternate","type":"application/atom+xml","href":"https://h/t/b"},
              {"rel":"hub","href":"https://h/"}]}"#,
        )
        .unwrap();
        let r = interpret("b@x", jrd, "https://x/".into()).unwrap();
        assert_eq!(
            (r.topic.as_str(), r.hub.as_str()),
            ("https://h/t/b", "https://h/")
        );
        let no_hub: Jrd = serde_json::from_str(
            r#"{"links":[{"rel":"alternate","type":"application/atom+xml","href":"https://h/t/b"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            interpret("b@x", no_hub, String::new()),
            Err(NameError::NoHub(_))
        ));
    }
}
