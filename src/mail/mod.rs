//! Mail: into hosted topics, a message becomes an entry ([`message`]), taken through an LMTP
//! listener behind the operator's mail server ([`lmtp`]) or handed over by `hubcast deliver`
//! ([`deliver`], an LMTP client of the running hub, for `.forward` and procmail). Out of any
//! topic, mail subscribers get each entry as a mail ([`outbound`], [`smtp`]), confirmed and
//! unsubscribed with signed links ([`token`]).

pub mod deliver;
pub mod lmtp;
pub mod message;
pub mod outbound;
pub mod smtp;
pub mod token;
