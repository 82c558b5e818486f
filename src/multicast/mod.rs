//! IP multicast of the hub's stream to peer hubs: numbered datagrams with a keyed tag, a
//! receiver's reorder window, repair over HTTP.

pub mod datagram;
pub mod metrics;
pub mod record;
pub mod reorder;

#[cfg(test)]
mod simulation;
