//! Load test for the hubcast WebSub hub.
//!
//! A sink of subscriber callbacks on many loopback addresses ([`sink`]), a driver that
//! subscribes and publishes through a hub process ([`driver`], [`hubproc`]), a baseline that
//! drives the same sink with a plain HTTP client ([`baseline`]), and reports with plots
//! ([`report`]). [`scenarios`] puts them together.

pub mod baseline;
pub mod driver;
pub mod histogram;
pub mod hubproc;
pub mod payload;
pub mod report;
pub mod scenarios;
pub mod sink;
