//! In-memory state: the domains, and the control knobs (faults, counters, rate window).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use crate::control::ActiveFaults;
use crate::records::DevRecord;
use crate::DevProviderConfig;

/// A domain as the dev provider holds it.
#[derive(Debug, Clone)]
pub(crate) struct DevDomain {
    pub id: String,
    pub name: String,
    pub region: String,
    pub created_at: String,
    /// Raw, so tests can force any spelling (`POST /_control/domains/{id}/status`).
    pub status: String,
    pub records: Vec<DevRecord>,
    /// Creation order, for list order and cursors.
    pub seq: u64,
    /// Forced statuses held (see `ForcedStatus::hold`): verification and DNS checks
    /// leave `status` and the records' statuses alone.
    pub status_held: bool,
}

impl DevDomain {
    fn capabilities(&self) -> serde_json::Value {
        let receiving = self.records.iter().any(|r| r.record == "Receiving");
        serde_json::json!({
            "sending": "enabled",
            "receiving": if receiving { "enabled" } else { "disabled" },
        })
    }

    /// `POST /domains` answer (Resend's create answer has no `object`).
    pub(crate) fn create_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "status": self.status,
            "capabilities": self.capabilities(),
            "records": self.records.iter().map(DevRecord::to_json).collect::<Vec<_>>(),
            "region": self.region,
            "open_tracking": false,
            "click_tracking": false,
        })
    }

    /// `GET /domains/{id}` answer.
    pub(crate) fn get_json(&self) -> serde_json::Value {
        serde_json::json!({
            "object": "domain",
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at,
            "region": self.region,
            "open_tracking": false,
            "click_tracking": false,
            "capabilities": self.capabilities(),
            "records": self.records.iter().map(DevRecord::to_json).collect::<Vec<_>>(),
        })
    }

    /// An item of `GET /domains` (no records).
    pub(crate) fn list_item_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at,
            "region": self.region,
            "open_tracking": false,
            "click_tracking": false,
            "capabilities": self.capabilities(),
        })
    }
}

#[derive(Default)]
pub(crate) struct Store {
    pub domains: HashMap<String, DevDomain>,
    /// Domain name → id: one domain per name, as at Resend.
    pub by_name: HashMap<String, String>,
    /// seq → id, for newest-first listing.
    pub order: BTreeMap<u64, String>,
    /// seq of deleted ids, so a list cursor survives a concurrent delete.
    pub deleted_seq: HashMap<String, u64>,
    /// How many domains were ever created per name (for `GET /_control/stats`).
    pub created_by_name: HashMap<String, u64>,
    pub next_seq: u64,
}

impl Store {
    /// The position of a cursor id, live or deleted.
    pub(crate) fn cursor_seq(&self, id: &str) -> Option<u64> {
        self.domains
            .get(id)
            .map(|d| d.seq)
            .or_else(|| self.deleted_seq.get(id).copied())
    }
}

/// Faults still to be served, counters, and the natural rate limit's window.
#[derive(Default)]
pub(crate) struct Control {
    pub faults: ActiveFaults,
    pub requests: u64,
    pub by_path: HashMap<String, u64>,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub window_start: Option<Instant>,
    pub window_count: u32,
}

pub(crate) struct AppState {
    pub store: RwLock<Store>,
    pub control: Mutex<Control>,
    /// `None` when no resolver could be built: nothing ever verifies then.
    pub resolver: Option<TokioResolver>,
    pub rate_limit_per_sec: Option<u32>,
    pub latency: Duration,
    /// Deletes wait while this is true (`hold_deletes` fault).
    pub hold_deletes: tokio::sync::watch::Sender<bool>,
    /// How many deletes are waiting on it now.
    pub deletes_held: std::sync::atomic::AtomicU64,
}

impl AppState {
    pub(crate) fn new(config: DevProviderConfig) -> Self {
        let resolver = crate::dns_check::resolver(&config.dns_nameservers)
            .map_err(|e| tracing::warn!(error = %e, "no DNS resolver; domains will not verify"))
            .ok();
        Self {
            store: RwLock::new(Store::default()),
            control: Mutex::new(Control::default()),
            resolver,
            rate_limit_per_sec: config.rate_limit_per_sec.filter(|n| *n > 0),
            latency: config.latency,
            hold_deletes: tokio::sync::watch::Sender::new(false),
            deletes_held: Default::default(),
        }
    }

    pub(crate) fn store_read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn store_write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while deletes are held (counted in `deletes_held` meanwhile).
    pub(crate) async fn wait_while_deletes_held(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut held = self.hold_deletes.subscribe();
        if !*held.borrow_and_update() {
            return;
        }
        self.deletes_held.fetch_add(1, SeqCst);
        let _ = held.wait_for(|hold| !*hold).await;
        self.deletes_held.fetch_sub(1, SeqCst);
    }

    pub(crate) fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}
