//! Property tests (proptest, stable Rust): the parsers that read what strangers send — form
//! bodies, URLs, topic prefixes, XML feeds, JSON Feed, config files, `hub.*` parameters —
//! never panic on any input and keep their invariants. The case count is bounded (256 per
//! property; `PROPTEST_CASES` changes it), so the suite runs them every time. A failing case
//! proptest finds is kept below as a plain regression test.

use bytes::Bytes;
use proptest::prelude::*;

use hubcast::config::{Config, DiffConfig};
use hubcast::feed::{self, xml};
use hubcast::storage::TopicState;
use hubcast::topic_prefix::TopicPrefix;
use hubcast::urls::HttpUrl;

fn diff_cfg(json_feed_items: bool) -> DiffConfig {
    DiffConfig {
        json_feed_items,
        max_entries: 10_000,
    }
}

/// Text that looks like the inputs: URL pieces, XML and JSON punctuation, escapes, non-ASCII.
fn texty() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("http://".to_owned()),
            Just("https://".to_owned()),
            Just("%".to_owned()),
            Just("%FF".to_owned()),
            Just("%2F".to_owned()),
            Just("&".to_owned()),
            Just("=".to_owned()),
            Just("<entry>".to_owned()),
            Just("</entry>".to_owned()),
            Just("<item>".to_owned()),
            Just("<!DOCTYPE".to_owned()),
            Just("<!ENTITY".to_owned()),
            Just("]]>".to_owned()),
            Just("{\"items\":[".to_owned()),
            "[a-z0-9./:?#@\\[\\]-]{0,12}",
            any::<char>().prop_map(String::from),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn atom(entries: &[(String, String)]) -> String {
    let mut doc = String::from(
        "<?xml version=\"1.0\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>t</title>",
    );
    for (id, text) in entries {
        doc.push_str(&format!(
            "<entry><id>{}</id><title>{}</title></entry>",
            escape(id),
            escape(text)
        ));
    }
    doc.push_str("</feed>");
    doc
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

proptest! {
    #[test]
    fn form_parsing_never_panics_and_reads_back_what_was_encoded(
        raw in prop::collection::vec(any::<u8>(), 0..256),
        pairs in prop::collection::vec((texty(), texty()), 0..8),
    ) {
        let _ = hubcast::form::parse(&raw);
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let decoded = hubcast::form::parse(encoded.as_bytes()).unwrap();
        // An empty pair is written "=": it reads back as one.
        prop_assert_eq!(decoded, pairs);
    }

    #[test]
    fn url_normalisation_is_total_and_idempotent(raw in texty()) {
        if let Ok(u) = HttpUrl::parse(&raw) {
            let again = HttpUrl::parse(u.as_str()).unwrap();
            prop_assert_eq!(again.as_str(), u.as_str());
        }
    }

    #[test]
    fn a_prefix_covers_what_lies_under_it_and_never_a_longer_host(
        host in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
        port in prop::option::of(1u16..65535),
        segments in prop::collection::vec("[a-z0-9]{1,6}", 0..4),
        tail in "[a-z0-9]{1,6}",
    ) {
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = segments.join("/");
        let prefix = TopicPrefix::parse(&format!("http://{authority}/{path}")).unwrap();
        let under = HttpUrl::parse(&format!("http://{authority}/{path}/{tail}")).unwrap();
        prop_assert!(prefix.covers(under.as_str()));
        let longer_host = HttpUrl::parse(&format!("http://{host}x/{path}/{tail}")).unwrap();
        prop_assert!(!prefix.covers(longer_host.as_str()));
        let deeper_host =
            HttpUrl::parse(&format!("http://{host}.evil.example/{path}/{tail}")).unwrap();
        prop_assert!(!prefix.covers(deeper_host.as_str()));
        if !path.is_empty() {
            let sibling = HttpUrl::parse(&format!("http://{authority}/{path}{tail}/x")).unwrap();
            prop_assert!(!prefix.covers(sibling.as_str()));
        }
    }

    #[test]
    fn prefix_parsing_never_panics(raw in texty(), topic in texty()) {
        if let Ok(p) = TopicPrefix::parse(&raw) {
            let _ = p.covers(&topic);
        }
    }

    #[test]
    fn the_xml_splitter_never_panics_and_keeps_spans_in_order(doc in texty()) {
        if let Ok(feed) = xml::split(&doc) {
            let mut end = 0;
            for e in &feed.entries {
                prop_assert!(e.span.start >= end && e.span.end <= doc.len());
                prop_assert!(doc.is_char_boundary(e.span.start) && doc.is_char_boundary(e.span.end));
                end = e.span.end;
            }
        }
    }

    #[test]
    fn the_splitter_finds_every_generated_entry(
        entries in prop::collection::vec(("[a-z0-9:]{1,10}", texty()), 0..12),
    ) {
        let doc = atom(&entries);
        let feed = xml::split(&doc).unwrap();
        let ids: Vec<String> = feed.entries.iter().map(|e| e.id.clone().unwrap_or_default()).collect();
        let expected: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        prop_assert_eq!(ids, expected);
    }

    #[test]
    fn diffing_never_panics_and_the_same_bytes_deliver_nothing(
        body in texty(),
        ct in prop_oneof![
            Just("application/atom+xml"),
            Just("application/rss+xml"),
            Just("application/feed+json"),
            Just("text/plain"),
        ],
        items in any::<bool>(),
    ) {
        let body = Bytes::from(body);
        if let Ok(first) = feed::diff(&diff_cfg(items), ct, &body, None) {
            let state = TopicState {
                content_hash: Some(first.content_hash.clone()),
                entries: first.entries.clone(),
                ..TopicState::default()
            };
            let again = feed::diff(&diff_cfg(items), ct, &body, Some(&state)).unwrap();
            prop_assert!(again.deliver.is_none());
        }
    }

    #[test]
    fn a_new_entry_is_what_the_next_diff_delivers(
        old in prop::collection::btree_map("[a-z0-9]{1,8}", "[a-z ]{0,12}", 1..6),
        new_text in "[a-z ]{1,12}",
    ) {
        let old: Vec<(String, String)> = old.into_iter().collect();
        let first = Bytes::from(atom(&old));
        let cfg = diff_cfg(false);
        let d1 = feed::diff(&cfg, "application/atom+xml", &first, None).unwrap();
        let state = TopicState {
            content_hash: Some(d1.content_hash),
            entries: d1.entries,
            ..TopicState::default()
        };
        let mut next = vec![("brand-new-id".to_owned(), new_text.clone())];
        next.extend(old.iter().cloned());
        let second = Bytes::from(atom(&next));
        let d2 = feed::diff(&cfg, "application/atom+xml", &second, Some(&state)).unwrap();
        let delivered = String::from_utf8(d2.deliver.unwrap().to_vec()).unwrap();
        prop_assert!(delivered.contains("brand-new-id"));
        for (id, _) in &old {
            let tag = format!("<id>{id}</id>");
            prop_assert!(!delivered.contains(&tag), "old entry {} delivered again", id);
        }
    }

    #[test]
    fn config_parsing_never_panics(
        section in prop_oneof![
            Just("server"), Just("delivery"), Just("fetch"), Just("subscriptions"),
            Just("limits"), Just("ssrf"), Just("admin"), Just("events"), Just("log"),
        ],
        key in "[a-z_]{1,24}",
        value in prop_oneof![
            texty().prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("[\"x\", 1]".to_owned()),
            Just("true".to_owned()),
        ],
        junk in texty(),
    ) {
        let _ = Config::from_toml_str(&format!("[{section}]\n{key} = {value}\n"));
        let _ = Config::from_toml_str(&junk);
    }

    #[test]
    fn hub_parameters_never_panic(pairs in prop::collection::vec(
        (prop_oneof![
            Just("hub.mode".to_owned()), Just("hub.topic".to_owned()),
            Just("hub.callback".to_owned()), Just("hub.url".to_owned()),
            Just("hub.lease_seconds".to_owned()), Just("hub.secret".to_owned()),
            texty(),
        ], texty()),
        0..10,
    )) {
        let _ = hubcast::websub::parse(&pairs);
    }
}
