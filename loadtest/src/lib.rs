//! Load test for the hubcast WebSub hub.
//!
//! A sink of subscriber callbacks on many loopback addresses ([`sink`]), a driver that
//! subscribes and publishes through a hub process ([`driver`], [`hubproc`]), a baseline that
//! drives the same sink with a plain HTTP client ([`baseline`]), and reports with plots
//! ([`report`]). [`scenarios`] puts them together; [`stream`] is the short-message stream.
//!
//! The machine's ceiling ([`ceiling`]) is the leanest client ([`wrk`], else [`lean_client`])
//! against the leanest sink ([`nginx`], else the hyper one in [`lean_sink`]); the hub can
//! deliver to that sink too, its deliveries then counted from its own [`metrics`].

pub mod baseline;
pub mod ceiling;
pub mod cluster;
pub mod driver;
pub mod histogram;
pub mod hubproc;
pub mod lean_client;
pub mod lean_sender;
pub mod lean_sink;
pub mod metrics;
pub mod multicast;
pub mod nginx;
pub mod payload;
pub mod pg;
pub mod programs;
pub mod relay;
pub mod report;
pub mod scenarios;
pub mod sink;
pub mod stream;
pub mod wrk;
