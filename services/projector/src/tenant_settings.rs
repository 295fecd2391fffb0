//! The `tenant_email_settings` projection: each tenant's default sender domain.

use crate::consume::{fetch_rows, DbProjection};
use chrono::{DateTime, Utc};
use email_domain_events::tenant::TenantSettings;
use email_domain_events::{Event, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;

/// The managed provider entry every tenant's settings carry (no key: the platform
/// holds the key). The provider's name is not shown to tenants.
pub fn managed_provider_configs() -> serde_json::Value {
    serde_json::json!([{
        "providerId": "managed-email-domains",
        "providerType": "managed",
        "isEnabled": true,
        "config": {"managed": true}
    }])
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettingsRow {
    pub tenant: TenantId,
    pub default_from_domain: Option<String>,
    pub previous_from_domain: Option<String>,
    pub provider_configs: serde_json::Value,
    pub verified_domains: serde_json::Value,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
struct Entry {
    settings: TenantSettings,
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct TenantSettingsProjection {
    cache: HashMap<TenantId, Entry>,
    pending: HashMap<TenantId, Entry>,
}

pub fn row(
    tenant: TenantId,
    settings: &TenantSettings,
    updated_at: Option<DateTime<Utc>>,
) -> SettingsRow {
    SettingsRow {
        tenant,
        default_from_domain: settings.default_from_domain.clone(),
        previous_from_domain: settings.previous_from_domain.clone(),
        provider_configs: managed_provider_configs(),
        verified_domains: serde_json::to_value(&settings.verified).unwrap_or_default(),
        updated_at,
    }
}

pub async fn upsert_rows(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
    rows: &[SettingsRow],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {table} (tenant, default_from_domain, previous_from_domain, provider_configs, verified_domains, updated_at)
         SELECT tenant, default_from_domain, previous_from_domain, provider_configs, verified_domains, updated_at
         FROM jsonb_populate_recordset(NULL::{table}, $1)
         ON CONFLICT (tenant) DO UPDATE SET
           default_from_domain = EXCLUDED.default_from_domain, previous_from_domain = EXCLUDED.previous_from_domain,
           provider_configs = EXCLUDED.provider_configs, verified_domains = EXCLUDED.verified_domains,
           updated_at = EXCLUDED.updated_at"
    );
    sqlx::query(&sql)
        .bind(serde_json::to_value(rows)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl DbProjection for TenantSettingsProjection {
    async fn apply(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        events: &[(u64, Event)],
    ) -> anyhow::Result<()> {
        let missing = events
            .iter()
            .map(|(_, e)| e.tenant_id)
            .filter(|t| !self.cache.contains_key(t));
        let rows: Vec<SettingsRow> = fetch_rows(
            tx,
            "SELECT to_jsonb(t) FROM tenant_email_settings t WHERE tenant = ANY($1)",
            missing.map(|t| t.0),
        )
        .await?;
        for row in rows {
            let settings = TenantSettings {
                default_from_domain: row.default_from_domain,
                previous_from_domain: row.previous_from_domain,
                verified: serde_json::from_value(row.verified_domains).unwrap_or_default(),
            };
            self.pending.insert(
                row.tenant,
                Entry {
                    settings,
                    updated_at: row.updated_at,
                },
            );
        }
        let mut touched = Vec::new();
        for (_, event) in events {
            let t = event.tenant_id;
            // Neither cached nor stored (loaded rows are in `pending`) nor seen earlier in
            // this batch: the tenant gets its row now.
            let is_new = !self.cache.contains_key(&t) && !self.pending.contains_key(&t);
            let mut entry = self
                .pending
                .remove(&t)
                .or_else(|| self.cache.get(&t).cloned())
                .unwrap_or(Entry {
                    settings: TenantSettings::default(),
                    updated_at: None,
                });
            let changed = entry.settings.apply(event);
            if changed || is_new {
                entry.updated_at = Some(event.occurred_at);
                touched.push(t);
            }
            self.pending.insert(t, entry);
        }
        touched.sort();
        touched.dedup();
        let rows: Vec<SettingsRow> = touched
            .iter()
            .filter_map(|t| {
                self.pending
                    .get(t)
                    .map(|e| row(*t, &e.settings, e.updated_at))
            })
            .collect();
        upsert_rows(tx, "tenant_email_settings", &rows).await
    }

    fn committed(&mut self) {
        if self.cache.len() > 200_000 {
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

    fn linger(&self) -> std::time::Duration {
        crate::consume::OFF_PATH_LINGER
    }

    /// Events that cannot change a tenant's settings (see `TenantSettings::apply`),
    /// all of tenants whose row is known to exist.
    fn unchanged(&self, events: &[(u64, Event)]) -> bool {
        events
            .iter()
            .all(|(_, e)| self.cache.contains_key(&e.tenant_id) && !TenantSettings::may_change(e))
    }

    /// The tenant: its settings follow all of its domains' events in log order.
    fn key(event: &Event) -> String {
        event.tenant_id.to_string()
    }
}
