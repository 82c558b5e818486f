//! An event as multicast carries it (the record its fragments slice), big-endian: `origin_seq`
//! u64, `topic_seq` u64, `created_ms` u64, the origin id (u8 length, bytes), the path (u8
//! count, each a u8 length and bytes), the topic (u16 length, bytes), the content type (u16
//! length, bytes), then the content to the end. The stream's number is the datagram's.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::relay::wire::EventLine;
use crate::storage::Event;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a malformed event record: {0}")]
pub struct RecordError(&'static str);

/// Whether every field of `e` fits its length prefix (else the sender announces the event and
/// receivers fetch it over HTTP: a record never cuts a field).
pub fn fits(e: &Event) -> bool {
    let path = e.hops();
    e.origin.len() <= 255
        && path.len() <= 255
        && path.iter().all(|h| h.len() <= 255)
        && e.topic.len() <= 65_535
        && e.content_type.len() <= 65_535
}

/// The record of `e`, whose fields [`fits`] (a field too long for its length prefix would be
/// cut).
pub fn encode(e: &Event) -> Bytes {
    let path = e.hops();
    let mut out = BytesMut::with_capacity(
        64 + e.origin.len() + e.topic.len() + e.content_type.len() + e.body.len(),
    );
    out.put_u64(e.origin_number());
    out.put_u64(e.topic_seq);
    out.put_u64(e.created_ms);
    short(&mut out, &e.origin);
    out.put_u8(path.len().min(255) as u8);
    for hop in path.iter().take(255) {
        short(&mut out, hop);
    }
    long(&mut out, &e.topic);
    long(&mut out, &e.content_type);
    out.put_slice(&e.body);
    out.freeze()
}

fn short(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(b.len() as u8);
    out.put_slice(b);
}

fn long(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(65_535)];
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

/// The event numbered `seq` in the sender's stream, as a line of its stream would give it, and
/// its content.
pub fn decode(seq: u64, mut r: Bytes) -> Result<(EventLine, Bytes), RecordError> {
    let need = |r: &Bytes, n: usize, what| {
        if r.remaining() < n {
            Err(RecordError(what))
        } else {
            Ok(())
        }
    };
    need(&r, 24, "numbers")?;
    let origin_seq = r.get_u64();
    let topic_seq = r.get_u64();
    let created_ms = r.get_u64();
    let text = |r: &mut Bytes, n: usize, what| -> Result<String, RecordError> {
        need(r, n, what)?;
        let b = r.split_to(n);
        String::from_utf8(b.to_vec()).map_err(|_| RecordError(what))
    };
    need(&r, 1, "origin")?;
    let n = r.get_u8() as usize;
    let origin = text(&mut r, n, "origin")?;
    need(&r, 1, "path")?;
    let hops = r.get_u8() as usize;
    let mut path = Vec::with_capacity(hops);
    for _ in 0..hops {
        need(&r, 1, "path")?;
        let n = r.get_u8() as usize;
        path.push(text(&mut r, n, "path")?);
    }
    need(&r, 2, "topic")?;
    let n = r.get_u16() as usize;
    let topic = text(&mut r, n, "topic")?;
    need(&r, 2, "content type")?;
    let n = r.get_u16() as usize;
    let content_type = text(&mut r, n, "content type")?;
    if origin.is_empty() || topic.is_empty() {
        return Err(RecordError("an empty origin or topic"));
    }
    let line = EventLine {
        seq,
        origin,
        origin_seq,
        path,
        topic,
        topic_seq,
        content_type,
        content: String::new(),
        created_ms,
    };
    Ok((line, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips() {
        let e = Event {
            seq: 41,
            topic: "https://t.example/feed".into(),
            topic_seq: 3,
            origin: "hub-o".into(),
            origin_seq: 17,
            path: vec!["hub-o".into(), "hub-a".into()],
            content_type: "application/atom+xml".into(),
            body: Bytes::from_static(b"\x00<feed/>"),
            created_ms: 99,
        };
        let (line, body) = decode(41, encode(&e)).unwrap();
        assert_eq!(
            (line.seq, line.origin_seq, line.topic_seq, line.created_ms),
            (41, 17, 3, 99)
        );
        assert_eq!(line.path, e.path);
        assert_eq!(
            (line.topic.as_str(), line.content_type.as_str()),
            (e.topic.as_str(), e.content_type.as_str())
        );
        assert_eq!(body, e.body);
        assert!(fits(&e));
        let long = Event {
            origin: "o".repeat(256),
            ..e.clone()
        };
        assert!(!fits(&long));
        let whole = encode(&e);
        for cut in 0..whole.len() - e.body.len() {
            assert!(decode(41, whole.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
