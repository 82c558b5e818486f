//! Hosted topics as read-only newsgroups: an NNTP server (RFC 3977) written here, as no
//! maintained Rust crate serves NNTP ([`server`] listens, [`session`] answers); articles synthesised from the topics'
//! entries ([`article`]); wildmat patterns ([`wildmat`]).

pub mod article;
pub mod server;
mod session;
pub mod wildmat;
