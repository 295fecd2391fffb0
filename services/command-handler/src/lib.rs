//! The command handler: consumes `EMAIL_DOMAIN_COMMANDS`, decides with the pure core,
//! appends events with optimistic concurrency and publishes exactly one outcome per
//! command.
//!
//! Ordering: one instance is active at a time (a KV lease); inside it, commands are
//! spread over lanes by domain name, and each lane handles its commands one after
//! another in stream order. So per domain, commands take effect in publish order,
//! while many domains are in flight at once. A standby instance takes over when the
//! lease runs out.
#![forbid(unsafe_code)]

mod dispatch;
mod fair;
mod lane;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, AckKind};
use email_domain_events::command::{self, DecodeFailure};
use email_domain_events::outcome::Outcome;
use email_domain_events::{decide::Rejection, decide::RejectionCode, Command, DomainName};
use futures::StreamExt;
use runtime::{dead_letters, lease::Lease, streams, Config, Shutdown};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

pub use lane::Services;

pub const CONSUMER: &str = "command-handler";

/// Commands the handler may hold unacknowledged. Fairness only reaches what the
/// handler has taken in: a command still on the server waits behind everything
/// published before it. So the window is wide enough for a large burst with all its
/// follow-ups (a registration brings two); what waits in the handler longer than
/// [`dispatch::KEEP_ALIVE`] is told to the server as in progress, so it is not
/// handed out again meanwhile.
const WINDOW: i64 = 100_000;

/// Runs the handler until `shutdown`: waits for the lease, then consumes.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let ops = runtime::ops::Ops::serve(&config, "command-handler", &shutdown).await?;
    let client = runtime::connect_nats(&config.nats_url, "command-handler").await?;
    let js = runtime::jetstream(client);
    streams::ensure(
        &js,
        &streams::StreamSettings {
            command_dedup_window: config.command_dedup_window,
        },
    )
    .await?;
    let services = Arc::new(Services::open(&js, &config).await?);
    let leases = js.get_key_value(streams::LEASES_BUCKET).await?;
    let lease = Lease::new(leases, CONSUMER, config.lease_ttl);
    ops.jetstream(&js).ready();
    loop {
        let Some(mut guard) = lease.acquire(&shutdown).await else {
            break;
        };
        tokio::select! {
            r = consume(&js, services.clone(), &config, &shutdown) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "consumer stopped; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            _ = guard.lost() => tracing::warn!("lease lost: standing by"),
        }
        if shutdown.is_triggered() {
            lease.release().await;
            break;
        }
    }
    Ok(())
}

async fn consume(
    js: &jetstream::Context,
    services: Arc<Services>,
    config: &Config,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let stream = js.get_stream(streams::COMMANDS).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: WINDOW,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;

    let dispatcher = dispatch::Dispatcher::new(
        (0..config.handler_lanes.max(1))
            .map(|_| lane::Lane::new(services.clone(), shutdown.clone())),
    );
    // Enough workers to keep the cores and the round trips to NATS busy, few enough
    // that a command is not slowed by hundreds of others beside it (`HANDLER_WORKERS`).
    for _ in 0..config.handler_workers.min(dispatcher.lanes()) {
        tokio::spawn(dispatcher.clone().work());
    }
    let keep_alive = tokio::spawn(dispatcher.clone().keep_alive());

    loop {
        let next = tokio::select! {
            m = messages.next() => m,
            _ = shutdown.wait() => break,
        };
        let Some(msg) = next else { break };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "command stream error");
                continue;
            }
        };
        let token = msg
            .subject
            .strip_prefix("email_domains.commands.")
            .unwrap_or("")
            .to_string();
        match command::decode(&token, &msg.payload) {
            Ok(cmd) => {
                let key = lane_key(&cmd, &services.config.reserved_domains);
                let idx = lane_index(&key, dispatcher.lanes());
                let received = std::time::Instant::now();
                let work = lane::Work { msg, cmd, received };
                dispatcher.push(idx, work);
            }
            Err(failure) => {
                let kind = command::CommandType::from_subject_token(&token)
                    .map_or("unknown", |t| t.as_str());
                runtime::ops::COMMANDS
                    .with_label_values(&[kind, "invalid"])
                    .inc();
                let services = services.clone();
                tokio::spawn(async move { reject_unreadable(&services, msg, failure).await });
            }
        }
    }
    // The workers finish what the lanes hold, then end.
    keep_alive.abort();
    dispatcher.close();
    Ok(())
}

/// Commands about the same name share a lane, whatever form the name was written in.
fn lane_key(cmd: &Command, reserved: &email_domain_events::ReservedDomains) -> String {
    match DomainName::parse(&cmd.domain, reserved) {
        Ok(n) => n.as_str().to_string(),
        Err(_) => cmd.domain.trim().trim_end_matches('.').to_ascii_lowercase(),
    }
}

fn lane_index(key: &str, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// Dead-letters a message that is not a command; a readable command id also gets a
/// rejected outcome (`invalid_command`), so its sender is never left waiting.
async fn reject_unreadable(services: &Services, msg: jetstream::Message, failure: DecodeFailure) {
    tracing::warn!(reason = failure.dead_letter_reason, error = %failure.error, subject = %msg.subject, "dead-lettered");
    let outcome = failure.command_id.map(|id| {
        let rejection = Rejection::new(RejectionCode::InvalidCommand, failure.error.clone());
        Outcome::rejected(
            id,
            failure.tenant_id.map(|t| t.to_string()),
            failure.domain.clone(),
            None,
            &rejection,
        )
    });
    dead_letter(
        services,
        &msg,
        failure.dead_letter_reason,
        &failure.error,
        outcome,
    )
    .await;
    let _ = msg.ack().await;
}

/// Ends a readable command that can never take effect (a permanent failure, `why`):
/// dead-lettered as `unprocessable`, and a public command's sender gets a rejected
/// outcome (`invalid_command`: not seen, so it may come again changed). The caller
/// acknowledges the message.
pub(crate) async fn give_up(
    services: &Services,
    msg: &jetstream::Message,
    cmd: &Command,
    why: &str,
) {
    let error = format!("the command could not be handled: {why}");
    let outcome = cmd.command_type.is_public().then(|| {
        let rejection = Rejection::new(RejectionCode::InvalidCommand, error.clone());
        Outcome::rejected(
            cmd.command_id,
            Some(cmd.tenant_id.to_string()),
            Some(cmd.domain.clone()),
            None,
            &rejection,
        )
    });
    dead_letter(services, msg, "unprocessable", &error, outcome).await;
}

/// Stores the dead letter of `msg` (cut to fit the server's max payload) and, if
/// given, its outcome; each is retried until it is stored or fails for good.
async fn dead_letter(
    services: &Services,
    msg: &jetstream::Message,
    reason: &str,
    error: &str,
    outcome: Option<Outcome>,
) {
    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
    let dedup = format!("dl-{seq}");
    let original = dead_letters::Original {
        subject: msg.subject.as_str(),
        headers: msg.headers.as_ref(),
        body: &msg.payload,
    };
    let mut letter_done = false;
    let mut outcome_done = outcome.is_none();
    loop {
        if !letter_done {
            // Fitted on each attempt: a reconnect may have brought another max payload.
            let letter = dead_letters::fitted(&services.js, &dedup, reason, error, original);
            let stored = dead_letters::publish(&services.js, &letter, &dedup).await;
            letter_done = settled(stored, "dead_letter");
        }
        if let (false, Some(o)) = (outcome_done, &outcome) {
            outcome_done = settled(services.outcomes.publish(o).await, "outcome");
        }
        if letter_done && outcome_done {
            return;
        }
        let _ = msg.ack_with(AckKind::Progress).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a publish is over with: stored, or failed in a way retrying cannot change
/// (said loudly, since something is then lost).
fn settled(result: Result<(), runtime::retry::Failure>, what: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(e) if e.is_permanent() => {
            runtime::retry::give_up(what, &e);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "retrying {what}");
            false
        }
    }
}
