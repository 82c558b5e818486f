//! Record encoding for byte-oriented backends: a JSON header followed by an opaque body, so
//! content bytes are stored as they are (no base64, no copies into JSON).

use serde::{Serialize, de::DeserializeOwned};

use super::{Event, EventSummary, FatContent, Ping, StorageError, Subscription};

/// `[u32 BE header length][JSON header][body]`.
pub fn encode<H: Serialize>(header: &H, body: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("storage headers serialise");
    let mut out = Vec::with_capacity(4 + json.len() + body.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    out
}

pub fn decode<H: DeserializeOwned>(bytes: &[u8]) -> Result<(H, &[u8]), StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(what.to_owned());
    let len = bytes.get(..4).ok_or_else(|| corrupt("short record"))?;
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    let json = bytes
        .get(4..4 + len)
        .ok_or_else(|| corrupt("truncated header"))?;
    let header = serde_json::from_slice(json).map_err(|e| corrupt(&e.to_string()))?;
    Ok((header, &bytes[4 + len..]))
}

pub fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("storage records serialise")
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PingHeader {
    id: u64,
    topic: String,
    content_type: Option<String>,
    received_ms: u64,
}

pub fn encode_ping(p: &Ping) -> Vec<u8> {
    let header = PingHeader {
        id: p.id,
        topic: p.topic.clone(),
        content_type: p.fat.as_ref().map(|f| f.content_type.clone()),
        received_ms: p.received_ms,
    };
    encode(
        &header,
        p.fat.as_ref().map(|f| f.body.as_slice()).unwrap_or(&[]),
    )
}

pub fn decode_ping(bytes: &[u8]) -> Result<Ping, StorageError> {
    let (h, body): (PingHeader, _) = decode(bytes)?;
    Ok(Ping {
        id: h.id,
        topic: h.topic,
        fat: h.content_type.map(|content_type| FatContent {
            content_type,
            body: body.to_vec(),
        }),
        received_ms: h.received_ms,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EventHeader {
    seq: u64,
    topic: String,
    #[serde(default)]
    topic_seq: u64,
    #[serde(default)]
    origin: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    origin_seq: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    path: Vec<String>,
    content_type: String,
    created_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub fn encode_event(e: &Event) -> Vec<u8> {
    let header = EventHeader {
        seq: e.seq,
        topic: e.topic.clone(),
        topic_seq: e.topic_seq,
        origin: e.origin.clone(),
        origin_seq: e.origin_seq,
        path: e.path.clone(),
        content_type: e.content_type.clone(),
        created_ms: e.created_ms,
    };
    encode(&header, &e.body)
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, StorageError> {
    let (h, body): (EventHeader, _) = decode(bytes)?;
    Ok(Event {
        seq: h.seq,
        topic: h.topic,
        topic_seq: h.topic_seq,
        origin: h.origin,
        origin_seq: h.origin_seq,
        path: h.path,
        content_type: h.content_type,
        body: bytes::Bytes::copy_from_slice(body),
        created_ms: h.created_ms,
    })
}

/// An event's header, without copying its body.
pub fn decode_event_summary(bytes: &[u8]) -> Result<EventSummary, StorageError> {
    let (h, body): (EventHeader, _) = decode(bytes)?;
    let origin_seq = if h.origin_seq == 0 {
        h.seq
    } else {
        h.origin_seq
    };
    let path = if h.path.is_empty() {
        vec![h.origin.clone()]
    } else {
        h.path
    };
    Ok(EventSummary {
        seq: h.seq,
        topic: h.topic,
        topic_seq: h.topic_seq,
        origin: h.origin,
        origin_seq,
        path,
        content_type: h.content_type,
        created_ms: h.created_ms,
        bytes: body.len(),
    })
}

/// A subscription's value where its key already holds topic, destination and callback
/// (`topic \0 destination \0 callback`): `[version 1][lease][expires][created]` as big-endian
/// u64s, then `[has secret][secret bytes]`. About 30 bytes instead of a few hundred of JSON.
pub fn encode_sub_value(s: &Subscription) -> Vec<u8> {
    let secret = s.secret.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(26 + secret.len());
    out.push(1);
    out.extend_from_slice(&s.lease_seconds.to_be_bytes());
    out.extend_from_slice(&s.expires_ms.to_be_bytes());
    out.extend_from_slice(&s.created_ms.to_be_bytes());
    out.push(u8::from(s.secret.is_some()));
    out.extend_from_slice(secret.as_bytes());
    out
}

pub fn decode_sub(key: &[u8], value: &[u8]) -> Result<Subscription, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("subscription record: {what}"));
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt("key is not UTF-8"));
    let (topic, destination, callback) =
        super::split_sub_key(key).ok_or_else(|| corrupt("key has fewer than three parts"))?;
    if value.len() < 26 || value[0] != 1 {
        return Err(corrupt("unknown or short value"));
    }
    let num = |at: usize| u64::from_be_bytes(value[at..at + 8].try_into().expect("8 bytes"));
    let secret = match value[25] {
        0 => None,
        1 => Some(text(&value[26..])?),
        _ => return Err(corrupt("bad secret flag")),
    };
    Ok(Subscription {
        topic: text(topic)?,
        callback: text(callback)?,
        destination: text(destination)?,
        secret,
        lease_seconds: num(1),
        expires_ms: num(9),
        created_ms: num(17),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_and_event_roundtrip() {
        let p = Ping {
            id: 7,
            topic: "http://t/".into(),
            fat: Some(FatContent {
                content_type: "text/plain".into(),
                body: vec![0, 1, 2, 255],
            }),
            received_ms: 9,
        };
        assert_eq!(decode_ping(&encode_ping(&p)).unwrap(), p);
        let light = Ping { fat: None, ..p };
        assert_eq!(decode_ping(&encode_ping(&light)).unwrap(), light);
        let e = Event {
            seq: 1,
            topic: "t".into(),
            topic_seq: 7,
            origin: "a1b2".into(),
            content_type: "a/b".into(),
            body: bytes::Bytes::from_static(b"\x00body"),
            created_ms: 3,
            origin_seq: 4,
            path: vec!["a1b2".into(), "c3d4".into()],
        };
        assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
    }

    #[test]
    fn subscriptions_round_trip_through_key_and_compact_value() {
        let s = Subscription {
            topic: "http://t/feed".into(),
            callback: "http://c:81/cb?x=1".into(),
            destination: "http://c:81".into(),
            secret: Some("sécret".into()),
            lease_seconds: 864_000,
            expires_ms: 1_234_567,
            created_ms: 42,
        };
        let key = crate::storage::sub_key(&s.topic, &s.destination, &s.callback);
        let value = encode_sub_value(&s);
        assert!(value.len() < 40);
        assert_eq!(decode_sub(&key, &value).unwrap(), s);
        let none = Subscription {
            secret: None,
            ..s.clone()
        };
        assert_eq!(decode_sub(&key, &encode_sub_value(&none)).unwrap(), none);
        assert!(decode_sub(&key, &value[..10]).is_err());
        assert!(decode_sub(b"no separators", &value).is_err());
        assert!(decode_sub(&key, b"{\"json\":1}").is_err());
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert!(decode_ping(b"").is_err());
        assert!(decode_ping(&[0, 0, 0, 50, b'{']).is_err());
        assert!(decode_event(&[0, 0, 0, 1, b'x']).is_err());
    }
}
