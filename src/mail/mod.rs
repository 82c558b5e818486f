//! Mail into hosted topics: a message becomes an entry ([`message`]), taken through an LMTP
//! listener behind the operator's mail server ([`lmtp`]) or handed over by `hubcast deliver`
//! ([`deliver`], an LMTP client of the running hub, for `.forward` and procmail).

pub mod deliver;
pub mod lmtp;
pub mod message;
