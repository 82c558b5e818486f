//! The hub's stream shared with other hubs: the line format peers read (`/relay/stream`,
//! `/relay/events`) and followers parse.

pub mod view;
pub mod wire;
