//! The hub's own counters, read from its Prometheus endpoint (`GET <hub>/metrics`): how the
//! driver counts deliveries when the hub delivers to the lean sink (which counts nothing), and
//! where the stream scenario reads the hub's backlog.

use std::time::Duration;

use anyhow::Context;

/// Successful deliveries.
pub const DELIVERED: &str = "hubcast_deliveries_total{outcome=\"delivered\"}";
/// Delivery jobs (event, destination) waiting or running.
pub const QUEUED_JOBS: &str = "hubcast_queued_jobs";
/// Stored retries not yet due or in progress.
pub const PENDING_RETRIES: &str = "hubcast_pending_retries";

/// One scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scrape {
    pub delivered: u64,
    pub queued_jobs: u64,
    pub pending_retries: u64,
}

pub struct HubMetrics {
    client: reqwest::Client,
    url: String,
}

impl HubMetrics {
    /// `hub` is the hub's base URL (ending in `/`).
    pub fn new(hub: &str) -> HubMetrics {
        HubMetrics {
            client: crate::driver::client(),
            url: format!("{}metrics", hub),
        }
    }

    /// Scrapes, retrying (a GET is safe to repeat) a few times within a few seconds.
    pub async fn scrape(&self) -> anyhow::Result<Scrape> {
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let r = async {
                let r = self
                    .client
                    .get(&self.url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await?
                    .error_for_status()?;
                r.text().await
            }
            .await;
            match r {
                Ok(text) => return parse(&text),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt")).with_context(|| format!("GET {}", self.url))
    }
}

/// The figures the load test reads from the exposition text.
pub fn parse(text: &str) -> anyhow::Result<Scrape> {
    let value = |name: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.trim().parse::<f64>().ok()).flatten()
            })
            .map(|v| v as u64)
            .with_context(|| format!("the hub's /metrics has no {name}"))
    };
    Ok(Scrape {
        delivered: value(DELIVERED)?,
        queued_jobs: value(QUEUED_JOBS)?,
        pending_retries: value(PENDING_RETRIES)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hubs_exposition() {
        let text = "# HELP hubcast_deliveries_total Delivery attempts by outcome.\n\
                    # TYPE hubcast_deliveries_total counter\n\
                    hubcast_deliveries_total{outcome=\"delivered\"} 1234\n\
                    hubcast_deliveries_total{outcome=\"failed\"} 5\n\
                    # TYPE hubcast_queued_jobs gauge\nhubcast_queued_jobs 17\n\
                    hubcast_pending_retries 2\n";
        let s = parse(text).unwrap();
        assert_eq!(
            s,
            Scrape {
                delivered: 1234,
                queued_jobs: 17,
                pending_retries: 2
            }
        );
        assert!(parse("hubcast_queued_jobs 1\n").is_err());
    }
}
