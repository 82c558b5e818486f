//! The status page's Cluster section and `GET /admin/api/cluster`: the nodes sharing the store
//! (id, address, last heartbeat) and what each one holds now.

use std::fmt::Write as _;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::status_page::{esc, when};
use crate::storage::NodeInfo;

/// What `GET /admin/api/cluster` answers.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The node that answers.
    pub node: String,
    /// Whether other nodes may share the store (a database).
    pub shared: bool,
    pub nodes: Vec<NodeInfo>,
}

pub async fn view(state: &AppState) -> Result<ClusterView, crate::storage::StorageError> {
    let now = state.clock.now_ms();
    Ok(ClusterView {
        node: state.engine.node_id().to_owned(),
        shared: state.store.shared,
        nodes: state.store.nodes.nodes(now).await?,
    })
}

pub async fn api(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(r) = super::admin_api::read(&req, &state) {
        return r;
    }
    match view(&state).await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body(format!("storage unavailable: {e}\n")),
    }
}

/// The section, shown when other nodes may share the store.
pub(super) fn cluster_html(v: &ClusterView) -> String {
    if !v.shared {
        return String::new();
    }
    let mut s = format!(
        "<h2 id=cluster>Cluster</h2><p>This page is served by node <b>{}</b>.</p>\
         <div class=scroll><table id=nodes><tr><th>node</th><th>address</th><th>started</th>\
         <th>last heartbeat</th><th>items held</th><th>destinations it delivers to</th></tr>",
        esc(&v.node)
    );
    for n in &v.nodes {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&n.id),
            esc(&n.address),
            when(n.started_ms),
            when(n.heartbeat_ms),
            n.holds,
            esc(&n.destinations.join(" "))
        );
    }
    s.push_str("</table></div>");
    s
}
