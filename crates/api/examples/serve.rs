//! Serve the ARM API alone (no agent) on a local port, for poking at it with an ARM client:
//! `cargo run -p skiff-api --example serve -- 127.0.0.1:18080 /tmp/skiff-api.db`.
//! Operations stay InProgress because nothing completes them.

use std::sync::Arc;

use async_trait::async_trait;
use skiff_api::{router, ApiConfig, Node};
use skiff_model::records::GroupRecord;
use skiff_model::ArmError;

struct NoNode;

#[async_trait]
impl Node for NoNode {
    async fn logs(&self, _group: &GroupRecord, _container: &str, _tail: Option<usize>, _timestamps: bool) -> Result<String, ArmError> {
        Ok(String::new())
    }
    async fn cached_images(&self) -> Vec<String> {
        Vec::new()
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".to_string());
    let db = args.next().unwrap_or_else(|| "/tmp/skiff-api.db".to_string());
    let store = Arc::new(skiff_store::SqliteStore::open(std::path::Path::new(&db)).expect("open store"));
    let app = router(store, Arc::new(NoNode), ApiConfig::default());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("serving on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}
