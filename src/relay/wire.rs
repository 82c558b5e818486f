//! The stream's line format (`application/vnd.hubcast.stream.v1+jsonl`): one JSON object per
//! line, an event or a heartbeat.
//!
//! ```text
//! {"seq":12,"origin":"…","origin_seq":12,"path":["…"],"topic":"https://…","topic_seq":3,
//!  "content_type":"application/atom+xml","content":"PD94bWwg…","created_ms":1764700000000}
//! {"heartbeat":{"lead":12,"trail":1,"position":12}}
//! ```
//!
//! `seq` is the event's number in the serving hub's stream (what `after` and `from`/`to` count);
//! `origin`/`origin_seq` name it where it entered the network; `path` lists the hubs it passed
//! through, its origin first and the serving hub last. A heartbeat's `position` is the number
//! up to which everything this reader may read has been sent: a follower's cursor moves there.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::storage::Event;

/// The media type of the stream and of event ranges; the version changes with the format.
pub const MEDIA_TYPE: &str = "application/vnd.hubcast.stream.v1+jsonl";

/// The header of stream and range answers naming the serving hub (its id, as event paths and
/// multicast datagrams name it).
pub const HUB_HEADER: &str = "X-Hubcast-Hub";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub seq: u64,
    pub origin: String,
    #[serde(default)]
    pub origin_seq: u64,
    pub path: Vec<String>,
    pub topic: String,
    pub topic_seq: u64,
    pub content_type: String,
    /// The content, base64.
    pub content: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The serving hub's newest durable event.
    pub lead: u64,
    /// Its oldest kept event.
    pub trail: u64,
    /// Everything this reader may read up to here has been sent.
    pub position: u64,
}

/// A line of the stream (read with [`parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Line {
    Heartbeat { heartbeat: Beat },
    Event(EventLine),
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not a stream line: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a stream line: neither a heartbeat nor an event (no \"{field}\")")]
    Missing { field: &'static str },
    #[error("event {seq}: content is not base64")]
    Base64 { seq: u64 },
}

impl EventLine {
    pub fn of(e: &Event) -> EventLine {
        EventLine {
            seq: e.seq,
            origin: e.origin.clone(),
            origin_seq: e.origin_number(),
            path: e.hops(),
            topic: e.topic.clone(),
            topic_seq: e.topic_seq,
            content_type: e.content_type.clone(),
            content: B64.encode(&e.body),
            created_ms: e.created_ms,
        }
    }

    /// The content, decoded.
    pub fn body(&self) -> Result<bytes::Bytes, LineError> {
        B64.decode(&self.content)
            .map(bytes::Bytes::from)
            .map_err(|_| LineError::Base64 { seq: self.seq })
    }
}

/// Appends `line` and a newline to `out`.
pub fn write(out: &mut Vec<u8>, line: &Line) {
    serde_json::to_writer(&mut *out, line).expect("stream lines serialise");
    out.push(b'\n');
}

/// Either kind of line, read in one pass (an untagged enum would buffer every line and try
/// each variant in turn): unknown fields are ignored, so later versions may add some.
#[derive(Deserialize)]
struct AnyLine {
    heartbeat: Option<Beat>,
    seq: Option<u64>,
    origin: Option<String>,
    #[serde(default)]
    origin_seq: u64,
    path: Option<Vec<String>>,
    topic: Option<String>,
    topic_seq: Option<u64>,
    content_type: Option<String>,
    content: Option<String>,
    created_ms: Option<u64>,
}

pub fn parse(line: &[u8]) -> Result<Line, LineError> {
    let any: AnyLine = serde_json::from_slice(line)?;
    if let Some(heartbeat) = any.heartbeat {
        return Ok(Line::Heartbeat { heartbeat });
    }
    let missing = |field: &'static str| LineError::Missing { field };
    Ok(Line::Event(EventLine {
        seq: any.seq.ok_or_else(|| missing("seq"))?,
        origin: any.origin.ok_or_else(|| missing("origin"))?,
        origin_seq: any.origin_seq,
        path: any.path.ok_or_else(|| missing("path"))?,
        topic: any.topic.ok_or_else(|| missing("topic"))?,
        topic_seq: any.topic_seq.ok_or_else(|| missing("topic_seq"))?,
        content_type: any.content_type.ok_or_else(|| missing("content_type"))?,
        content: any.content.ok_or_else(|| missing("content"))?,
        created_ms: any.created_ms.ok_or_else(|| missing("created_ms"))?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_heartbeats_round_trip() {
        let e = Event {
            seq: 7,
            topic: "https://t.example/feed".into(),
            topic_seq: 2,
            origin: "a".into(),
            content_type: "text/plain".into(),
            body: bytes::Bytes::from_static(b"\x00hello"),
            created_ms: 9,
            ..Default::default()
        };
        let mut out = Vec::new();
        write(&mut out, &Line::Event(EventLine::of(&e)));
        let beat = Beat {
            lead: 9,
            trail: 1,
            position: 8,
        };
        write(&mut out, &Line::Heartbeat { heartbeat: beat });
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 3, "two lines, each ended");
        let Line::Event(got) = parse(lines[0]).unwrap() else {
            panic!("an event line")
        };
        assert_eq!(
            (got.origin_seq, got.path.clone()),
            (7, vec!["a".to_owned()])
        );
        assert_eq!(&got.body().unwrap()[..], b"\x00hello");
        assert_eq!(
            parse(lines[1]).unwrap(),
            Line::Heartbeat { heartbeat: beat }
        );
        let e = parse(b"{\"seq\":1}").unwrap_err().to_string();
        assert!(
            e.contains("\"origin\""),
            "the first missing field is named: {e}"
        );
        assert!(parse(b"[1]").is_err());
        let newer = br#"{"heartbeat":{"lead":3,"trail":1,"position":3},"later":true}"#;
        assert!(
            matches!(parse(newer), Ok(Line::Heartbeat { heartbeat }) if heartbeat.lead == 3),
            "fields a later version adds are ignored"
        );
        let bad = EventLine {
            content: "!!".into(),
            ..got
        };
        assert!(bad.body().is_err());
    }
}
