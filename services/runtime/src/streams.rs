//! The streams and KV buckets of docs/interface.md §2, created at start-up when missing.
//! Existing streams are used as they are: a service never deletes or rewrites them.

use async_nats::jetstream::{
    self, kv,
    stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType},
};
use std::time::Duration;

pub const COMMANDS: &str = "EMAIL_DOMAIN_COMMANDS";
pub const EVENTS: &str = "EMAIL_DOMAIN_EVENTS";
pub const OUTCOMES: &str = "EMAIL_DOMAIN_OUTCOMES";
pub const ANALYTICS: &str = "EMAIL_DOMAIN_ANALYTICS";
pub const DEAD_LETTERS: &str = "EMAIL_DOMAIN_DEAD_LETTERS";
/// Internal: provider calls waiting for the provider worker (interactive and background).
pub const PROVIDER_WORK: &str = "EMAIL_DOMAIN_PROVIDER_WORK";

pub const COMMAND_SUBJECTS: &str = "email_domains.commands.>";
pub const EVENT_SUBJECTS: &str = "email_domains.events.>";
pub const PROVIDER_WORK_INTERACTIVE: &str = "email_domains.provider_work.interactive";
pub const PROVIDER_WORK_BACKGROUND: &str = "email_domains.provider_work.background";
/// Scheduled status polls: answered many at a time from the provider's domain list.
pub const PROVIDER_WORK_POLL: &str = "email_domains.provider_work.poll";

/// Which registration holds a domain name (at most one live owner per name).
pub const NAMES_BUCKET: &str = "email_domain_names";
/// Aggregate snapshots, so a cold handler does not replay a long history.
pub const SNAPSHOTS_BUCKET: &str = "email_domain_snapshots";
/// Which registration's provider domain has a name: orders a new registration's
/// provider create after the old one's clean-up (the provider worker's).
pub const PROVIDER_NAMES_BUCKET: &str = "email_domain_provider_names";
/// Leader leases of the services that must run as one active instance.
pub const LEASES_BUCKET: &str = "email_domain_leases";

/// Stream settings that tests may change (the command dedup window).
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub command_dedup_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            command_dedup_window: Duration::from_secs(120),
        }
    }
}

pub fn stream_configs(settings: &StreamSettings) -> Vec<StreamConfig> {
    vec![
        StreamConfig {
            name: COMMANDS.into(),
            subjects: vec![COMMAND_SUBJECTS.into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: settings.command_dedup_window,
            description: Some("Commands for email domains (work queue)".into()),
            ..Default::default()
        },
        StreamConfig {
            name: EVENTS.into(),
            subjects: vec![EVENT_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            description: Some("The append-only event log of email domains".into()),
            ..Default::default()
        },
        StreamConfig {
            name: OUTCOMES.into(),
            subjects: vec![email_domain_events::outcome::Outcome::ALL_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            // No age limit: the outcome stream is also the ledger of handled command ids,
            // so a command id never has a second effect however late it comes back.
            max_messages_per_subject: 1,
            allow_direct: true,
            description: Some("One outcome per command".into()),
            ..Default::default()
        },
        StreamConfig {
            name: ANALYTICS.into(),
            subjects: vec!["analytics.email_domain.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: Duration::from_secs(8 * 24 * 3600),
            duplicate_window: Duration::from_secs(600),
            allow_direct: true,
            description: Some("Analytics CloudEvents".into()),
            ..Default::default()
        },
        StreamConfig {
            name: DEAD_LETTERS.into(),
            subjects: vec!["email_domains.dead_letters.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            allow_direct: true,
            description: Some("Messages that could not be read as commands".into()),
            ..Default::default()
        },
        StreamConfig {
            name: PROVIDER_WORK.into(),
            subjects: vec!["email_domains.provider_work.>".into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(600),
            description: Some("Provider calls waiting for the provider worker".into()),
            ..Default::default()
        },
        StreamConfig {
            name: crate::partitions::STREAM.into(),
            subjects: vec![crate::partitions::SUBJECTS.into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            // The intake's message ids (one per command message): a restarted intake
            // may send again what it sent but had not yet acknowledged.
            duplicate_window: Duration::from_secs(600),
            allow_direct: true,
            description: Some(
                "Commands by partition, in publish order (internal: the intake's)".into(),
            ),
            ..Default::default()
        },
    ]
}

/// Creates every stream and bucket that is missing. Idempotent.
pub async fn ensure(js: &jetstream::Context, settings: &StreamSettings) -> anyhow::Result<()> {
    for config in stream_configs(settings) {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create or open stream {name}: {e}"))?;
    }
    for bucket in [
        NAMES_BUCKET,
        SNAPSHOTS_BUCKET,
        LEASES_BUCKET,
        PROVIDER_NAMES_BUCKET,
        crate::partitions::BUCKET,
    ] {
        ensure_bucket(js, bucket).await?;
    }
    Ok(())
}

/// Creates a KV bucket's stream by hand: the client's `create_key_value` first asks
/// `$JS.API.INFO`, whose nats-server 2.9 reply it cannot parse (FIELD-NOTES §3).
pub async fn ensure_bucket(js: &jetstream::Context, bucket: &str) -> anyhow::Result<kv::Store> {
    let config = StreamConfig {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        storage: StorageType::File,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create KV bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open KV bucket {bucket}: {e}"))
}

/// Deletes the durable consumer `name` if it is there: a work queue keeps exactly the
/// messages no one acknowledged, so a consumer made anew afterwards starts at the
/// first of them at once, in order, instead of waiting out the ack wait for what the
/// old one had handed out (how the handler's intake and partitions take over).
pub async fn forget_consumer(stream: &jetstream::stream::Stream, name: &str) -> anyhow::Result<()> {
    match stream.delete_consumer(name).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot restart consumer {name}: {e}")),
    }
}

fn is_not_found(e: &jetstream::stream::ConsumerError) -> bool {
    matches!(
        e.kind(),
        jetstream::stream::ConsumerErrorKind::JetStream(err)
            if err.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
    )
}
