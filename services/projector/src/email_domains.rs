//! The `email_domains` projection: one row per registration, the domain's state.

use crate::consume::{fetch_rows, DbProjection};
use chrono::{DateTime, Utc};
use email_domain_events::{evolve, DnsRecord, DomainId, DomainState, Event, Status, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;

/// An `email_domains` row, as JSON (column names are the keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: DomainId,
    pub tenant: TenantId,
    pub domain_name: String,
    pub status: String,
    pub provider_id: Option<String>,
    pub provider_domain_id: Option<String>,
    pub dns_records: Vec<DnsRecord>,
    pub failure_reason: Option<String>,
    pub metadata: Metadata,
    pub verified_at: Option<DateTime<Utc>>,
    pub dns_last_checked_at: Option<DateTime<Utc>>,
    pub next_check_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// The rest of a domain's state, kept in the row's `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub region: Option<String>,
    pub requested_by: Option<String>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub provider_status: Option<String>,
    pub deactivation_reason: Option<String>,
    pub drift_since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub recheck_attempt: u32,
    #[serde(default)]
    pub check_requested: bool,
    #[serde(default)]
    pub provider_cleanup_pending: bool,
    /// What will bite the owner later, found after provisioning (see `preflight`).
    #[serde(default)]
    pub preflight_warnings: Vec<email_domain_events::preflight::Warning>,
    /// Records the authority serves but public resolvers still deny, and when that
    /// ends (from the last check; empty when there is nothing to wait for).
    #[serde(default)]
    pub dns_propagation: Vec<email_domain_events::records::Propagation>,
}

/// Postgres refuses NUL in text and jsonb. Text that reaches a row from outside (DNS
/// answers, provider replies, operator reasons) could carry one and would stop the
/// projection for everyone, so it is replaced, the same way live and in a replay.
fn clean(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

fn clean_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        clean(s);
    }
}

impl Row {
    pub fn from_state(s: &DomainState) -> Row {
        let mut row = Row::from_state_raw(s);
        clean_opt(&mut row.provider_id);
        clean_opt(&mut row.provider_domain_id);
        clean_opt(&mut row.failure_reason);
        let m = &mut row.metadata;
        for f in [
            &mut m.region,
            &mut m.requested_by,
            &mut m.provider_status,
            &mut m.deactivation_reason,
        ] {
            clean_opt(f);
        }
        for w in &mut m.preflight_warnings {
            clean(&mut w.message);
        }
        for r in &mut row.dns_records {
            for f in [
                &mut r.purpose,
                &mut r.record_type,
                &mut r.name,
                &mut r.value,
            ] {
                clean(f);
            }
            r.observed.iter_mut().for_each(clean);
            if let Some(d) = &mut r.diagnosis {
                clean(&mut d.message);
                clean(&mut d.record);
                clean(&mut d.host);
                d.observed.iter_mut().for_each(clean);
            }
        }
        row
    }

    fn from_state_raw(s: &DomainState) -> Row {
        Row {
            id: s.domain_id,
            tenant: s.tenant_id,
            domain_name: s.domain.clone(),
            status: s.status.as_str().to_string(),
            provider_id: s.provider_id.clone(),
            provider_domain_id: s.provider_domain_id.clone(),
            dns_records: s.records.clone(),
            failure_reason: s.failure_reason.clone(),
            metadata: Metadata {
                region: s.region.clone(),
                requested_by: s.requested_by.clone(),
                deadline_at: s.deadline_at,
                provider_status: s.provider_status.clone(),
                deactivation_reason: s.deactivation_reason.clone(),
                drift_since: s.drift_since,
                recheck_attempt: s.attempt,
                check_requested: s.check_requested,
                provider_cleanup_pending: s.cleanup_pending,
                preflight_warnings: s.preflight.clone(),
                dns_propagation: s.propagation.clone(),
            },
            verified_at: s.verified_at,
            dns_last_checked_at: s.dns_last_checked_at,
            next_check_at: s.next_check_at,
            created_at: Some(s.created_at),
            updated_at: Some(s.updated_at),
            version: s.version as i64,
        }
    }

    pub fn into_state(self) -> Option<DomainState> {
        Some(DomainState {
            domain_id: self.id,
            tenant_id: self.tenant,
            domain: self.domain_name,
            status: Status::parse(&self.status)?,
            version: self.version as u64,
            region: self.metadata.region,
            requested_by: self.metadata.requested_by,
            provider_id: self.provider_id,
            provider_domain_id: self.provider_domain_id,
            provider_status: self.metadata.provider_status,
            records: self.dns_records,
            failure_reason: self.failure_reason,
            deactivation_reason: self.metadata.deactivation_reason,
            verified_at: self.verified_at,
            dns_last_checked_at: self.dns_last_checked_at,
            next_check_at: self.next_check_at,
            deadline_at: self.metadata.deadline_at,
            created_at: self.created_at?,
            updated_at: self.updated_at?,
            attempt: self.metadata.recheck_attempt,
            check_requested: self.metadata.check_requested,
            drift_since: self.metadata.drift_since,
            cleanup_pending: self.metadata.provider_cleanup_pending,
            preflight: self.metadata.preflight_warnings,
            propagation: self.metadata.dns_propagation,
            recent_causations: Default::default(),
        })
    }
}

/// How many domain states the projector keeps in memory between batches.
const CACHE_LIMIT: usize = 200_000;

#[derive(Default)]
pub struct EmailDomains {
    cache: HashMap<DomainId, DomainState>,
    pending: HashMap<DomainId, DomainState>,
}

/// Writes rows in one statement per group: rows leaving the live set first, so the
/// unique index on live names never sees a transient duplicate within a batch.
pub async fn upsert_rows(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
    rows: &[Row],
) -> anyhow::Result<()> {
    let (gone, live): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.status == "deactivated");
    for group in [gone, live] {
        if group.is_empty() {
            continue;
        }
        let json = serde_json::to_value(&group)?;
        let sql = format!(
            "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1)
             ON CONFLICT (id) DO UPDATE SET
               tenant = EXCLUDED.tenant, domain_name = EXCLUDED.domain_name, status = EXCLUDED.status,
               provider_id = EXCLUDED.provider_id, provider_domain_id = EXCLUDED.provider_domain_id,
               dns_records = EXCLUDED.dns_records, failure_reason = EXCLUDED.failure_reason,
               metadata = EXCLUDED.metadata, verified_at = EXCLUDED.verified_at,
               dns_last_checked_at = EXCLUDED.dns_last_checked_at, next_check_at = EXCLUDED.next_check_at,
               created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version"
        );
        sqlx::query(&sql).bind(json).execute(&mut **tx).await?;
    }
    Ok(())
}

impl DbProjection for EmailDomains {
    async fn apply(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        events: &[(u64, Event)],
    ) -> anyhow::Result<()> {
        // Rows to read: domains not cached, except those this batch starts (their
        // first event here is their first event at all: there is no row yet).
        let mut first_seen = std::collections::HashSet::new();
        let missing: Vec<DomainId> = events
            .iter()
            .filter(|(_, e)| first_seen.insert(e.domain_id) && e.version > 1)
            .map(|(_, e)| e.domain_id)
            .filter(|id| !self.cache.contains_key(id))
            .collect();
        let rows: Vec<Row> = fetch_rows(
            tx,
            "SELECT to_jsonb(d) FROM email_domains d WHERE id = ANY($1)",
            missing.iter().map(|id| id.0),
        )
        .await?;
        for row in rows {
            if let Some(s) = row.into_state() {
                self.pending.insert(s.domain_id, s);
            }
        }
        let mut touched = Vec::new();
        for (_, event) in events {
            let current = self
                .pending
                .remove(&event.domain_id)
                .or_else(|| self.cache.get(&event.domain_id).cloned());
            if let Some(next) = evolve(current, event) {
                touched.push(event.domain_id);
                self.pending.insert(event.domain_id, next);
            }
        }
        touched.sort();
        touched.dedup();
        let rows: Vec<Row> = touched
            .iter()
            .filter_map(|id| self.pending.get(id))
            .map(Row::from_state)
            .collect();
        upsert_rows(tx, "email_domains", &rows).await
    }

    fn committed(&mut self) {
        if self.cache.len() + self.pending.len() > CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.extend(self.pending.drain());
    }

    fn rolled_back(&mut self) {
        self.pending.clear();
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.cache.clear();
    }

    /// The name: every registration of a name in log order, so the unique index on
    /// live names sees a release before the next registration.
    fn key(event: &Event) -> String {
        event.domain.clone()
    }
}
