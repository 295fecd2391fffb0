//! Projectors: separate durable consumers of the event log that keep the read models.
//!
//! - `email_domains`: one row per registration (docs/interface.md §3), folded with the core's
//!   `evolve`, so a row is exactly the domain's state.
//! - `tenant_settings`: `tenant_email_settings`, folded with the core's `TenantSettings`.
//! - `analytics`: CloudEvents on `analytics.email_domain.<name>`, ids derived from the
//!   source event, so a redelivery is dropped by JetStream's dedup.
//!
//! The Postgres projectors write their rows and their stream checkpoint in one
//! transaction and acknowledge only after the commit; events at or below the
//! checkpoint are skipped. So a crash at any point neither loses nor repeats an event.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod consume;
pub mod email_domains;
pub mod partitioned;
pub mod tenant_settings;

use runtime::{lease::Lease, streams, Config, Shutdown};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    EmailDomains,
    TenantSettings,
    Analytics,
}

impl Projection {
    pub const ALL: [Projection; 3] = [
        Projection::EmailDomains,
        Projection::TenantSettings,
        Projection::Analytics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Projection::EmailDomains => "email_domains",
            Projection::TenantSettings => "tenant_settings",
            Projection::Analytics => "analytics",
        }
    }

    /// The durable consumer's name.
    pub fn consumer(self) -> &'static str {
        match self {
            Projection::EmailDomains => "projector-email-domains",
            Projection::TenantSettings => "projector-tenant-settings",
            Projection::Analytics => "analytics-emitter",
        }
    }

    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Projection>> {
        if s == "all" {
            return Ok(Self::ALL.to_vec());
        }
        s.split(',')
            .map(|p| match p.trim() {
                "email_domains" => Ok(Projection::EmailDomains),
                "tenant_settings" | "tenant_email_settings" => Ok(Projection::TenantSettings),
                "analytics" => Ok(Projection::Analytics),
                other => anyhow::bail!("unknown projection {other:?}: use email_domains, tenant_settings, analytics or all"),
            })
            .collect()
    }
}

/// Test hooks.
#[derive(Clone, Default)]
pub struct Options {
    /// When set to n > 0: after the n-th committed batch, stop before acknowledging
    /// it, as a crash between commit and ack would.
    pub crash_after_commit: Option<Arc<AtomicI64>>,
    /// Counts events that came again and were skipped because the checkpoint had them.
    pub skipped: Option<Arc<AtomicI64>>,
}

impl Options {
    /// Each projector of a process gets its own crash counter, starting from the same value.
    fn for_projection(&self) -> Options {
        let crash = self
            .crash_after_commit
            .as_ref()
            .map(|n| Arc::new(AtomicI64::new(n.load(Ordering::SeqCst))));
        Options {
            crash_after_commit: crash,
            skipped: self.skipped.clone(),
        }
    }

    pub(crate) fn count_skipped(&self, n: usize) {
        if let Some(c) = &self.skipped {
            c.fetch_add(n as i64, Ordering::SeqCst);
        }
    }

    pub(crate) fn should_crash(&self) -> bool {
        match &self.crash_after_commit {
            Some(n) => n.fetch_sub(1, Ordering::SeqCst) == 1,
            None => false,
        }
    }
}

pub async fn run(
    config: Config,
    which: Vec<Projection>,
    shutdown: Shutdown,
    options: Options,
) -> anyhow::Result<()> {
    let ops = runtime::ops::Ops::serve(&config, "projector", &shutdown).await?;
    let client = runtime::connect_nats(&config.nats_url, "projector").await?;
    let js = runtime::jetstream(client);
    streams::ensure(
        &js,
        &streams::StreamSettings {
            command_dedup_window: config.command_dedup_window,
        },
    )
    .await?;
    let needs_db = which.iter().any(|p| *p != Projection::Analytics);
    let pool = if needs_db {
        Some(runtime::db::connect_and_migrate_for_retrying_writer(&config.database_url, 8).await?)
    } else {
        None
    };
    ops.jetstream(&js);
    if let Some(pool) = &pool {
        ops.postgres(pool);
    }
    ops.ready();
    let leases = js.get_key_value(streams::LEASES_BUCKET).await?;
    let mut tasks = Vec::new();
    for p in which {
        let js = js.clone();
        let shutdown = shutdown.clone();
        let options = options.for_projection();
        let pool = pool.clone();
        let (partitions, ttl) = (config.projector_partitions, config.lease_ttl);
        let lease = Lease::new(
            leases.clone(),
            &format!("projector-{}", p.name()),
            config.lease_ttl,
        );
        tasks.push(tokio::spawn(async move {
            let r = project(&js, pool, p, (partitions, ttl), lease, &shutdown, &options).await;
            if let Err(e) = &r {
                tracing::error!(projection = p.name(), error = %e, "projector stopped");
            }
            r
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The analytics emitter runs as one active instance: its durable consumer is
/// recreated at start, so a second one beside it would take batches out of order.
/// More instances stand by and take over by lease. (It only republishes; one keeps
/// up with the log.)
async fn analytics_by_lease(
    js: &async_nats::jetstream::Context,
    lease: Lease,
    shutdown: &Shutdown,
    options: &Options,
) -> anyhow::Result<()> {
    while let Some(mut guard) = lease.acquire(shutdown).await {
        let r = tokio::select! {
            r = analytics::run(js, shutdown, options) => r,
            _ = guard.lost() => {
                tracing::warn!("analytics lease lost: standing by");
                continue;
            }
        };
        lease.release().await;
        return r;
    }
    Ok(())
}

/// Runs this instance's share of one projection until `shutdown` or an error.
async fn project(
    js: &async_nats::jetstream::Context,
    pool: Option<sqlx::PgPool>,
    p: Projection,
    (partitions, lease_ttl): (u32, std::time::Duration),
    lease: Lease,
    shutdown: &Shutdown,
    options: &Options,
) -> anyhow::Result<()> {
    let db = || {
        pool.clone()
            .ok_or_else(|| anyhow::anyhow!("{} needs the database", p.name()))
    };
    match p {
        Projection::EmailDomains => {
            let spec = partitioned::Spec {
                name: p.name(),
                partitions,
                lease_ttl,
                fold: email_domains::EmailDomains::default,
            };
            partitioned::run(js, db()?, spec, shutdown, options).await
        }
        Projection::TenantSettings => {
            let spec = partitioned::Spec {
                name: p.name(),
                partitions,
                lease_ttl,
                fold: tenant_settings::TenantSettingsProjection::default,
            };
            partitioned::run(js, db()?, spec, shutdown, options).await
        }
        Projection::Analytics => analytics_by_lease(js, lease, shutdown, options).await,
    }
}
