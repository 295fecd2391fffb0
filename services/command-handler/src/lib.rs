//! The command handler: consumes commands, decides with the pure core, appends events
//! with optimistic concurrency and publishes exactly one outcome per command.
//!
//! Scale-out and order: the intake (one instance at a time) moves commands in publish
//! order to partitions keyed by domain name; the running instances share the
//! partitions through leases (`runtime::partitions`), and a partition's new owner
//! resumes at its first unfinished command. Inside an instance, commands are spread
//! over lanes by domain name, and each lane handles its commands one after another in
//! partition order. So per domain, commands take effect in publish order, across
//! instances and handoffs, while many domains are in flight at once.
#![forbid(unsafe_code)]

mod dispatch;
mod intake;
mod lane;
mod partition;
mod unanswered;

#[doc(hidden)]
pub use intake::UNANSWERED_PER_PARTITION as INTAKE_UNANSWERED_PER_PARTITION;

use async_nats::jetstream::{self, AckKind};
use email_domain_events::command::DecodeFailure;
use email_domain_events::outcome::Outcome;
use email_domain_events::{decide::Rejection, decide::RejectionCode, Command};
use runtime::partitions::{self, Change, Ownership};
use runtime::{dead_letters, lease::Lease, streams, Config, Shutdown};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

pub use intake::CONSUMER;
pub use lane::Services;

/// Commands the handler may hold unacknowledged, over all the partitions it owns.
/// Fairness only reaches what the handler has taken in: a command still on the server
/// waits behind everything published before it. So the window is wide enough for a
/// large burst with all its follow-ups (a registration brings two); what waits in the
/// handler longer than [`dispatch::KEEP_ALIVE`] is told to the server as in progress,
/// so it is not handed out again meanwhile.
const WINDOW: i64 = 100_000;

/// Runs one handler instance until `shutdown`: it may hold the intake, and it owns
/// its share of the partitions.
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
    let dispatcher = dispatch::Dispatcher::new(
        (0..config.handler_lanes.max(1))
            .map(|_| lane::Lane::new(services.clone(), shutdown.clone())),
        config.handler_fleet_rate,
    );
    // Enough workers to keep the cores and the round trips to NATS busy, few enough
    // that a command is not slowed by hundreds of others beside it (`HANDLER_WORKERS`).
    let workers: Vec<_> = (0..config.handler_workers.min(dispatcher.lanes()))
        .map(|_| tokio::spawn(dispatcher.clone().work()))
        .collect();
    let keep_alive = tokio::spawn(dispatcher.clone().keep_alive());

    let intake = tokio::spawn(intake::run(
        services.clone(),
        intake_lease(&js, &config).await?,
        config.handler_partitions,
        shutdown.clone(),
    ));
    let (ownership, changes) = Ownership::start(
        js.get_key_value(partitions::BUCKET).await?,
        partitions::Group::handlers(),
        config.handler_partitions,
        config.lease_ttl,
    );
    ops.jetstream(&js).ready();
    let window = (WINDOW / i64::from(config.handler_partitions.max(1))).max(1000);
    let owned = Owned {
        services: services.clone(),
        dispatcher: dispatcher.clone(),
        ownership: ownership.clone(),
        window,
        handover: config.lease_ttl,
        running: HashMap::new(),
    };
    owned.follow(changes, &shutdown).await;

    // The workers finish what the lanes hold, then the leases go, so the next owners
    // start at once where this one ended.
    let _ = intake.await;
    keep_alive.abort();
    dispatcher.close();
    for w in workers {
        let _ = w.await;
    }
    ownership.stop().await;
    Ok(())
}

/// Runs only the intake, no partitions, until `shutdown`: for tests that look at
/// what the intake moves before any handler takes it.
#[doc(hidden)]
pub async fn run_intake(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let client = runtime::connect_nats(&config.nats_url, "command-handler-intake").await?;
    let js = runtime::jetstream(client);
    let services = Arc::new(Services::open(&js, &config).await?);
    let lease = intake_lease(&js, &config).await?;
    intake::run(services, lease, config.handler_partitions, shutdown).await;
    Ok(())
}

async fn intake_lease(js: &jetstream::Context, config: &Config) -> anyhow::Result<Lease> {
    let leases = js.get_key_value(streams::LEASES_BUCKET).await?;
    Ok(Lease::new(leases, intake::CONSUMER, config.lease_ttl))
}

/// The partitions this instance consumes.
struct Owned {
    services: Arc<Services>,
    dispatcher: dispatch::Dispatcher,
    ownership: Ownership,
    window: i64,
    /// How long a handed-over partition's started commands may take to finish.
    handover: Duration,
    running: HashMap<u32, partition::Running>,
}

impl Owned {
    /// Starts and stops partitions as the leases say, until `shutdown`.
    async fn follow(
        mut self,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
        shutdown: &Shutdown,
    ) {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = shutdown.wait() => None,
            };
            match change {
                Some(c) => self.apply(c),
                None => break,
            }
        }
        for (_, r) in self.running.drain() {
            r.stop();
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Acquired(p) => {
                if let Some(old) = self.running.remove(&p) {
                    old.stop();
                }
                let r = partition::Running::start(
                    p,
                    self.services.clone(),
                    self.dispatcher.clone(),
                    self.window,
                );
                self.running.insert(p, r);
                runtime::ops::PARTITIONS_OWNED.set(self.running.len() as i64);
            }
            Change::Lost(p) => {
                if let Some(r) = self.running.remove(&p) {
                    r.stop();
                }
                runtime::ops::PARTITIONS_OWNED.set(self.running.len() as i64);
            }
            Change::Revoked(p) => {
                if let Some(r) = self.running.remove(&p) {
                    let ownership = self.ownership.clone();
                    let handover = self.handover;
                    tokio::spawn(async move {
                        r.stop_and_finish(handover).await;
                        ownership.release(p);
                    });
                } else {
                    self.ownership.release(p);
                }
                runtime::ops::PARTITIONS_OWNED.set(self.running.len() as i64);
            }
        }
    }
}

pub(crate) fn lane_index(key: &str, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// Dead-letters a message that is not a command; a readable command id also gets a
/// rejected outcome (`invalid_command`), so its sender is never left waiting.
pub(crate) async fn reject_unreadable(
    services: &Services,
    msg: jetstream::Message,
    failure: DecodeFailure,
) {
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

/// Ends a command whose id another tenant used first: dead-lettered as
/// `command_id_taken`, without an outcome (the id's subject holds the first tenant's,
/// which a second one would replace in the ledger). The caller acknowledges it.
pub(crate) async fn refuse_other_tenants_id(
    services: &Services,
    msg: &jetstream::Message,
    cmd: &Command,
) {
    let error = format!(
        "command id {} was used by another tenant first; send the command with a new id",
        cmd.command_id
    );
    tracing::warn!(command_id = %cmd.command_id, "a command id of another tenant: dead-lettered");
    dead_letter(services, msg, "command_id_taken", &error, None).await;
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
    // Unique across the commands stream and the partitions: each has its own sequences.
    let dedup = match msg.info() {
        Ok(i) => format!("dl-{}-{}", i.stream, i.stream_sequence),
        Err(_) => format!("dl-{}", uuid::Uuid::new_v4()),
    };
    // The public subject the command came on, so a retry goes through the front door.
    let subject = partitions::public_subject(&msg.subject);
    let original = dead_letters::Original {
        subject: &subject,
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
