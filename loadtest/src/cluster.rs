//! The `cluster` scenario: the same workloads on one sled hub, then on 1, 2 and 3 hub nodes
//! sharing one PostgreSQL database (subscriptions through the first node, pings spread over all
//! of them, deliveries to the lean sink counted from every node's /metrics). Each case reports
//! deliveries per second and, on PostgreSQL, what the database did per event and per delivery:
//! statements (`pg_stat_statements`, in a throwaway cluster), transactions and WAL bytes. The
//! machine's ceiling (wrk or the lean client against the same sink) is measured first, in the
//! same repetition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::driver::{self, Callbacks, Pace, Published, TopicServer, Topology};
use crate::hubproc::{HubProcess, HubSettings};
use crate::lean_sink::LeanSink;
use crate::metrics::HubMetrics;
use crate::pg::Postgres;
use crate::report::{Phase, Report};
use crate::scenarios::{Options, measure_ceiling};

/// The cases: (label, nodes on PostgreSQL; 0: one sled hub).
const CASES: [(&str, usize); 4] = [("sled", 0), ("pg1", 1), ("pg2", 2), ("pg3", 3)];

pub async fn run(o: &Options, fanout: &Topology, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    // One event per topic in both: several events of one topic for a destination that falls
    // behind are merged into one delivery, which would make the counts incomparable.
    let many = Topology {
        topics: 2_000,
        subs_per_topic: 10,
        destinations: fanout.destinations,
        events: 1,
        payload: fanout.payload,
    };
    let pg = Postgres::start()?;
    let (lean, ceiling) = measure_ceiling(o, fanout, r).await?;
    r.label("hub_sink", &format!("lean ({})", lean.name()));
    let mut phases = Vec::new();
    for (workload, topo) in [("fanout", fanout), ("many_topics", &many)] {
        for (case, nodes) in CASES {
            eprintln!("cluster: {workload} on {case}");
            let m = measure(o, topo, &lean, &pg, case, nodes).await?;
            let name = format!("{case}_{workload}");
            r.figure(&format!("{name}_deliveries_per_second"), m.phase.per_second);
            r.figure(
                &format!("{name}_to_ceiling_ratio"),
                m.phase.per_second / ceiling.requests_per_second,
            );
            if let Some(w) = m.db {
                let events = (topo.topics * topo.events) as f64;
                let deliveries = topo.expected() as f64;
                if let Some(s) = w.statements {
                    r.figure(&format!("{name}_statements_per_event"), s as f64 / events);
                    r.figure(
                        &format!("{name}_statements_per_delivery"),
                        s as f64 / deliveries,
                    );
                }
                r.figure(
                    &format!("{name}_transactions_per_event"),
                    w.transactions as f64 / events,
                );
                r.figure(
                    &format!("{name}_wal_bytes_per_event"),
                    w.wal_bytes as f64 / events,
                );
                r.figure(
                    &format!("{name}_wal_bytes_per_delivery"),
                    w.wal_bytes as f64 / deliveries,
                );
            }
            phases.push(m.phase);
        }
    }
    lean.stop().await;
    Ok(phases)
}

struct Measured {
    phase: Phase,
    /// The database's work while publishing and delivering (PostgreSQL cases).
    db: Option<crate::pg::DbWork>,
}

async fn measure(
    o: &Options,
    topo: &Topology,
    lean: &LeanSink,
    pg: &Postgres,
    case: &str,
    nodes: usize,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let topics = TopicServer::start(topo.topics).await?;
    let mut hubs = Vec::new();
    if nodes == 0 {
        hubs.push(HubProcess::start(&o.hub_bin()?, dir.path(), &o.settings()).await?);
    } else {
        let url = pg.fresh_schema(&format!("bench_{case}")).await?;
        for i in 0..nodes {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let settings = HubSettings {
                storage: format!("backend = \"postgres\"\npostgres_url = {url:?}\npool_size = 16"),
                extra: format!(
                    "[cluster]\nnode_id = \"node{i}\"\npoll_interval = \"20ms\"\nheartbeat_interval = \"500ms\"\nrescan_interval = \"1s\"\nlease = \"10s\"\n"
                ),
                ..o.settings()
            };
            hubs.push(HubProcess::start(&o.hub_bin()?, &node_dir, &settings).await?);
        }
        // Every node sees the others before the load starts (destinations are shared out
        // among the live nodes).
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    let url = |d, i| lean.callback(d, i);
    let callbacks = Callbacks {
        url: &url,
        verifications: None,
    };
    driver::subscribe_all(&hubs[0].url, topo, &callbacks, &topics, o.limit()).await?;
    let metrics: Vec<HubMetrics> = hubs.iter().map(|h| HubMetrics::new(&h.url)).collect();
    let delivered = || async {
        let mut sum = 0;
        for m in &metrics {
            sum += m.scrape().await?.delivered;
        }
        anyhow::Ok(sum)
    };
    let before = delivered().await?;
    let db_before = if nodes > 0 {
        Some(pg.work().await?)
    } else {
        None
    };
    let start = Instant::now();
    // Pings spread over the nodes: node i takes every nodes-th event.
    let published = Arc::new(Published::new(topo.topics));
    let per_node = topo.events.div_ceil(hubs.len()).max(1);
    let publishing = futures_util::future::try_join_all(hubs.iter().enumerate().map(|(i, h)| {
        let from = (i * per_node).min(topo.events);
        let to = ((i + 1) * per_node).min(topo.events);
        driver::publish(
            &h.url,
            topo,
            &topics,
            o.ping,
            from..to,
            Pace::default(),
            &published,
        )
    }));
    let target = topo.expected();
    let counting = async {
        let deadline = Instant::now() + o.limit();
        loop {
            let n = delivered().await? - before;
            if n >= target {
                return anyhow::Ok((n, start.elapsed()));
            }
            if Instant::now() > deadline {
                anyhow::bail!("{case}: {n} of {target} deliveries within {:?}", o.limit());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (p, c) = tokio::join!(publishing, counting);
    p?;
    let (n, took) = c.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}; first node's log ends:\n{}",
            crate::scenarios::hub_log_tail(&hubs[0].dir)
        )
    })?;
    let db = match db_before {
        Some(b) => {
            let a = pg.work().await?;
            Some(crate::pg::DbWork {
                statements: a.statements.zip(b.statements).map(|(a, b)| a - b),
                transactions: a.transactions - b.transactions,
                wal_bytes: a.wal_bytes - b.wal_bytes,
            })
        }
        None => None,
    };
    for h in hubs {
        h.stop().await?;
    }
    let seconds = took.as_secs_f64();
    let label = match nodes {
        0 => "1 hub on sled".to_owned(),
        n => format!("{n} node(s) on PostgreSQL"),
    };
    Ok(Measured {
        phase: Phase {
            label,
            counted_by: "hub metrics",
            deliveries: n,
            seconds,
            per_second: n as f64 / seconds,
            latency_us: None,
            tally: None,
            bad_signatures: None,
            timeline: Vec::new(),
            latency_buckets: Vec::new(),
            backlog: Vec::new(),
        },
        db,
    })
}
