//! The multicast datagram, version 1 (big-endian), at most [`MAX_DATAGRAM`] bytes so it never
//! fragments on a 1,500-byte path:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `HC` |
//! | 2 | 1 | version, 1 |
//! | 3 | 1 | kind: 1 a fragment of an event, 2 an announcement, 3 a heartbeat |
//! | 4 | 8 | sequence: the event's number in the sender's stream (heartbeat: the lead, the last event sent to the group) |
//! | 12 | 8 | previous: the number of the event sent to the group before this one, 0 for none (heartbeat: the trail) |
//! | 20 | 4 | the event's record size in bytes (heartbeat: 0) |
//! | 24 | 2 | fragment index (from 0) |
//! | 26 | 2 | fragment count (1 for an announcement or a heartbeat) |
//! | 28 | 1 | length `n` of the origin id, 1 to 64 |
//! | 29 | n | origin id: the sending hub's id |
//! | 29+n | 2 | payload length `p` |
//! | 31+n | p | payload: a slice of the event's record; an announcement's topic; empty |
//! | 31+n+p | 16 | tag: HMAC-SHA256 with `multicast.key` over every byte before it, truncated to 128 bits |
//!
//! A group may carry only some of the stream's events (topic prefixes): "previous" tells a
//! receiver that no event of the group lies between two numbers, so a gap is a missing number
//! it was told of, never a number the group skips. An event larger than
//! `multicast.max_event_bytes` is announced (sequence, topic, size) and fetched over HTTP. The
//! tag is checked before anything else is read.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Largest datagram, header and tag included (an MTU of 1,500 less IP and UDP headers, with
/// room for tunnels).
pub const MAX_DATAGRAM: usize = 1408;
/// Bytes of the truncated HMAC.
pub const TAG: usize = 16;
/// Longest origin id.
pub const MAX_ORIGIN: usize = 64;
const MAGIC: [u8; 2] = *b"HC";
const VERSION: u8 = 1;
/// Header bytes before the origin id.
const FIXED: usize = 29;

/// What a datagram carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Fragment `index` of `count` of event `seq`'s record of `size` bytes; `prev` is the
    /// event sent to the group before it.
    Fragment {
        seq: u64,
        prev: u64,
        size: u32,
        index: u16,
        count: u16,
        data: Bytes,
    },
    /// Event `seq` of `size` bytes is too large to multicast: fetch it over HTTP.
    Announce {
        seq: u64,
        prev: u64,
        size: u32,
        topic: String,
    },
    /// The sender's newest event (`lead`) and its oldest still kept (`trail`).
    Heartbeat { lead: u64, trail: u64 },
}

/// A datagram whose tag was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub origin: String,
    pub body: Body,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("too short or too long for a datagram")]
    Size,
    #[error("not a hubcast datagram")]
    Magic,
    #[error("datagram version {0} (this hub reads version 1)")]
    Version(u8),
    #[error("the tag does not match the shared key")]
    Tag,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// The keyed tag of `bytes`.
fn tag(key: &[u8], bytes: &[u8]) -> [u8; TAG] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(bytes);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG];
    out.copy_from_slice(&full[..TAG]);
    out
}

/// Payload bytes one datagram holds for a sender with this origin id.
pub fn payload_room(origin: &str) -> usize {
    MAX_DATAGRAM - FIXED - origin.len() - 2 - TAG
}

/// Encodes and tags a datagram. `origin` is at most [`MAX_ORIGIN`] bytes and the payload fits
/// [`payload_room`] (the sender's own invariants; checked in debug builds).
pub fn encode(key: &[u8], origin: &str, body: &Body) -> Bytes {
    debug_assert!(!origin.is_empty() && origin.len() <= MAX_ORIGIN);
    type Fields<'a> = (u8, u64, u64, u32, u16, u16, &'a [u8]);
    let (kind, seq, prev, size, index, count, payload): Fields<'_> = match body {
        Body::Fragment {
            seq,
            prev,
            size,
            index,
            count,
            data,
        } => (1, *seq, *prev, *size, *index, *count, data),
        Body::Announce {
            seq,
            prev,
            size,
            topic,
        } => (2, *seq, *prev, *size, 0, 1, topic.as_bytes()),
        Body::Heartbeat { lead, trail } => (3, *lead, *trail, 0, 0, 1, &[]),
    };
    debug_assert!(payload.len() <= payload_room(origin));
    let mut out = BytesMut::with_capacity(FIXED + origin.len() + 2 + payload.len() + TAG);
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u64(seq);
    out.put_u64(prev);
    out.put_u32(size);
    out.put_u16(index);
    out.put_u16(count);
    out.put_u8(origin.len() as u8);
    out.put_slice(origin.as_bytes());
    out.put_u16(payload.len() as u16);
    out.put_slice(payload);
    let t = tag(key, &out);
    out.put_slice(&t);
    out.freeze()
}

/// Checks the tag, then reads the datagram.
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Datagram, DatagramError> {
    if bytes.len() < FIXED + 1 + 2 + TAG || bytes.len() > MAX_DATAGRAM {
        return Err(DatagramError::Size);
    }
    if bytes[..2] != MAGIC {
        return Err(DatagramError::Magic);
    }
    if bytes[2] != VERSION {
        return Err(DatagramError::Version(bytes[2]));
    }
    let (signed, given) = bytes.split_at(bytes.len() - TAG);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(signed);
    mac.verify_truncated_left(given)
        .map_err(|_| DatagramError::Tag)?;
    let u64_at = |at: usize| u64::from_be_bytes(signed[at..at + 8].try_into().expect("8 bytes"));
    let u16_at = |at: usize| u16::from_be_bytes([signed[at], signed[at + 1]]);
    let kind = signed[3];
    let (seq, prev) = (u64_at(4), u64_at(12));
    let size = u32::from_be_bytes(signed[20..24].try_into().expect("4 bytes"));
    let (index, count) = (u16_at(24), u16_at(26));
    let n = signed[28] as usize;
    if n == 0 || n > MAX_ORIGIN || signed.len() < FIXED + n + 2 {
        return Err(DatagramError::Malformed("origin id"));
    }
    let origin = std::str::from_utf8(&signed[FIXED..FIXED + n])
        .map_err(|_| DatagramError::Malformed("origin id is not UTF-8"))?
        .to_owned();
    let p = u16_at(FIXED + n) as usize;
    let payload = &signed[FIXED + n + 2..];
    if payload.len() != p {
        return Err(DatagramError::Malformed("payload length"));
    }
    let body = match kind {
        1 => {
            // The sender cuts a record into full fragments of the payload room and a last
            // one: anything else (a count out of proportion to the size) is refused before a
            // receiver allocates for it.
            let room = payload_room(&origin) as u64;
            let total = u64::from(size);
            let want = if (index as u64) + 1 < count as u64 {
                room
            } else {
                total.saturating_sub(room * (count as u64).saturating_sub(1))
            };
            if total == 0
                || count as u64 != total.div_ceil(room)
                || index >= count
                || p as u64 != want
            {
                return Err(DatagramError::Malformed("fragment index, count or size"));
            }
            Body::Fragment {
                seq,
                prev,
                size,
                index,
                count,
                data: Bytes::copy_from_slice(payload),
            }
        }
        2 => Body::Announce {
            seq,
            prev,
            size,
            topic: std::str::from_utf8(payload)
                .map_err(|_| DatagramError::Malformed("topic is not UTF-8"))?
                .to_owned(),
        },
        3 => Body::Heartbeat {
            lead: seq,
            trail: prev,
        },
        _ => return Err(DatagramError::Malformed("kind")),
    };
    if !matches!(body, Body::Heartbeat { .. }) && (seq == 0 || prev >= seq) {
        return Err(DatagramError::Malformed("sequence"));
    }
    Ok(Datagram { origin, body })
}

/// The datagrams of event `seq`'s record (sent after `prev`): fragments of at most
/// [`payload_room`] bytes. The record is at most `u16::MAX` fragments (the sender announces
/// larger events).
pub fn fragments(key: &[u8], origin: &str, seq: u64, prev: u64, record: &Bytes) -> Vec<Bytes> {
    let room = payload_room(origin);
    let count = record.len().div_ceil(room).max(1);
    debug_assert!(count <= u16::MAX as usize);
    (0..count)
        .map(|i| {
            let data = record.slice(i * room..((i + 1) * room).min(record.len()));
            encode(
                key,
                origin,
                &Body::Fragment {
                    seq,
                    prev,
                    size: record.len() as u32,
                    index: i as u16,
                    count: count as u16,
                    data,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a shared key of the group";

    #[test]
    fn each_kind_round_trips_within_the_size() {
        let record = Bytes::from(vec![7u8; 5000]);
        let frags = fragments(KEY, "hub-a", 9, 4, &record);
        assert_eq!(frags.len(), 4);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= MAX_DATAGRAM);
            let d = decode(KEY, f).unwrap();
            assert_eq!(d.origin, "hub-a");
            let Body::Fragment {
                seq,
                prev,
                size,
                index,
                count,
                data,
            } = d.body
            else {
                panic!("a fragment")
            };
            assert_eq!((seq, prev, size, index, count), (9, 4, 5000, i as u16, 4));
            joined.extend_from_slice(&data);
        }
        assert_eq!(joined, record);
        for body in [
            Body::Announce {
                seq: 3,
                prev: 1,
                size: 1 << 20,
                topic: "https://t.example/big".into(),
            },
            Body::Heartbeat { lead: 12, trail: 2 },
        ] {
            let d = decode(KEY, &encode(KEY, "hub-a", &body)).unwrap();
            assert_eq!(d.body, body);
        }
    }

    #[test]
    fn any_changed_bit_or_another_key_fails_the_tag() {
        let d = encode(KEY, "hub-a", &Body::Heartbeat { lead: 1, trail: 1 });
        assert_eq!(decode(b"another key", &d), Err(DatagramError::Tag));
        for i in 3..d.len() {
            let mut bad = d.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(decode(KEY, &bad), Err(DatagramError::Tag), "byte {i}");
        }
        assert_eq!(decode(KEY, &d[..10]), Err(DatagramError::Size));
        let mut v2 = d.to_vec();
        v2[2] = 2;
        assert_eq!(decode(KEY, &v2), Err(DatagramError::Version(2)));
        assert_eq!(decode(KEY, &[0u8; 64]), Err(DatagramError::Magic));
    }

    #[test]
    fn a_tagged_but_inconsistent_datagram_is_malformed() {
        let bad = Body::Fragment {
            seq: 1,
            prev: 0,
            size: 10,
            index: 2,
            count: 2,
            data: Bytes::from_static(b"x"),
        };
        assert!(matches!(
            decode(KEY, &encode(KEY, "hub-a", &bad)),
            Err(DatagramError::Malformed(_))
        ));
        // A count out of proportion to the size (a receiver would allocate for it).
        let swollen = Body::Fragment {
            seq: 1,
            prev: 0,
            size: 1,
            index: 0,
            count: 65_535,
            data: Bytes::from_static(b"x"),
        };
        assert!(matches!(
            decode(KEY, &encode(KEY, "hub-a", &swollen)),
            Err(DatagramError::Malformed(_))
        ));
        let backwards = Body::Announce {
            seq: 5,
            prev: 5,
            size: 10,
            topic: "t".into(),
        };
        assert!(matches!(
            decode(KEY, &encode(KEY, "hub-a", &backwards)),
            Err(DatagramError::Malformed(_))
        ));
    }
}
