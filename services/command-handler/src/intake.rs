//! The intake: moves commands from the public work queue to their partitions. One
//! instance at a time does it (a lease), since order across the move is what
//! per-domain order rests on; it only reads, hashes and republishes, so one keeps up
//! with many handlers.
//!
//! It reads ahead (up to [`WINDOW`] commands) and moves what it has read fair between
//! tenants, people first (the handler's [`FairQueue`]): a tenant's burst of 20,000
//! no longer puts another tenant's click behind all of it at the front door. Each
//! tenant's commands keep their publish order (per class), which is the order the
//! handler keeps per domain.
//!
//! It moves only as fast as the handlers answer: at most [`UNANSWERED_PER_PARTITION`]
//! public commands per partition (512 with the default 8) moved and not yet answered
//! (their outcome seen). Moving a burst at full speed pushed 20,000 commands through
//! the partition streams and into the handlers within a second, and the machine spent
//! that second on it, in front of a quiet tenant's command; held back here, the burst
//! waits in fair order and costs its moves while it is worked off. (Past half its
//! window the intake moves regardless, so that it keeps reading.)
//!
//! Each command is republished with a message id of its own (the commands stream's
//! creation time and sequence), and acknowledged once the partition stream has it. A
//! failed republish starts the intake again from the first command not acknowledged,
//! in publish order; what was already republished is dropped by the partition
//! stream's duplicate window. Unreadable messages are dead-lettered here, at the
//! front door.

use crate::lane::Services;
use crate::unanswered::Unanswered;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use email_domain_events::command;
use email_domain_events::outcome::Outcome;
use email_domain_events::{CommandId, TenantId};
use futures::StreamExt;
use runtime::fair::{Class, FairQueue};
use runtime::{lease::Lease, partitions, streams, Shutdown};
use std::sync::Arc;
use std::time::Duration;

/// The durable consumer of `EMAIL_DOMAIN_COMMANDS` (the name it had when the handler
/// consumed it itself, so an older instance and the intake exclude each other).
pub const CONSUMER: &str = "command-handler";
/// Commands the intake may hold read and not moved (the consumer's window): fairness
/// reaches only what it has read, so the window holds a large burst whole.
const WINDOW: i64 = 50_000;
/// Commands republished and not yet stored: few, so a quiet tenant's command, once
/// read, waits behind few others on their way to the server.
const IN_FLIGHT: usize = 256;
/// Public commands moved and not yet answered, at most, per partition (see [`Unanswered`]).
/// Enough to keep every instance's workers busy however the partitions are shared
/// (an instance owns at least one), few enough that a burst waits here, not in the
/// handlers.
pub const UNANSWERED_PER_PARTITION: usize = 64;
/// A moved command with no outcome stops counting after this (dead-lettered by the
/// handler, or its outcome missed).
const FORGET_AFTER: Duration = Duration::from_secs(5);
/// How long a command read may wait here to be moved before the server hands it out
/// again (it is then dropped as a duplicate at the partition, or recognised by the
/// outcome ledger): well beyond a full window at a handler's pace.
const ACK_WAIT: Duration = Duration::from_secs(300);

/// Runs the intake whenever this instance holds its lease, until `shutdown`.
pub async fn run(services: Arc<Services>, lease: Lease, partitions: u32, shutdown: Shutdown) {
    loop {
        let Some(mut guard) = lease.acquire(&shutdown).await else {
            break;
        };
        let moved = tokio::select! {
            r = forward(&services, partitions) => Some(r),
            _ = guard.lost() => None,
            _ = shutdown.wait() => Some(Ok(())),
        };
        runtime::ops::INTAKE_BACKLOG.set(0);
        match moved {
            Some(Err(e)) => {
                tracing::warn!(error = %e, "intake stopped; starting again from the first command not moved");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => tracing::warn!("intake lease lost: standing by"),
            Some(Ok(())) => {}
        }
        if shutdown.is_triggered() {
            lease.release().await;
            break;
        }
    }
}

/// The consumer, made anew so it starts at the first command still queued.
async fn open(js: &jetstream::Context) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    let stream = js.get_stream(streams::COMMANDS).await?;
    streams::forget_consumer(&stream, CONSUMER).await?;
    Ok(stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: WINDOW,
            ..Default::default()
        })
        .await?)
}

/// Moves commands until an error (the caller starts again).
async fn forward(services: &Arc<Services>, partitions: u32) -> anyhow::Result<()> {
    let js = &services.js;
    let epoch = {
        let mut stream = js.get_stream(streams::COMMANDS).await?;
        stream.info().await?.created.unix_timestamp_nanos()
    };
    let consumer = open(js).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    let (acks, pending) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let mut acker = tokio::spawn(acknowledge(pending));
    let mut backlog = FairQueue::<TenantId, Read>::default();
    let mut unanswered = Unanswered::new(
        UNANSWERED_PER_PARTITION * partitions.max(1) as usize,
        FORGET_AFTER,
    );
    let mut answers = js.client().subscribe(Outcome::ALL_SUBJECTS).await?;
    loop {
        let now = std::time::Instant::now();
        // Past half the window, moves go on regardless, so reading goes on.
        let may_move = !backlog.is_empty()
            && (unanswered.has_room(now) || backlog.len() >= (WINDOW / 2) as usize);
        // While moves wait for answers, the oldest unanswered one may stop counting.
        let forgotten_at = unanswered
            .forgotten_at()
            .filter(|_| !backlog.is_empty() && !may_move)
            .unwrap_or(now + FORGET_AFTER);
        // Answers and reading first: what has arrived counts before the next move, so
        // the next move is the fair one among everything delivered.
        tokio::select! {
            biased;
            r = &mut acker => return Err(acknowledger_ended(r)),
            Some(answer) = answers.next() => {
                if let Some(id) = answered(&answer.subject) {
                    unanswered.answered(id);
                }
            }
            m = messages.next() => {
                let msg = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "command stream error");
                        continue;
                    }
                    None => anyhow::bail!("the command stream ended"),
                };
                if let Some(read) = read(services, msg, partitions) {
                    backlog.push(read.class, read.tenant, read);
                    runtime::ops::INTAKE_BACKLOG.inc();
                }
            }
            permit = acks.reserve(), if may_move => {
                let permit = permit.map_err(|_| anyhow::anyhow!("the intake's acknowledger ended"))?;
                let next = backlog.pop().expect("the backlog is not empty");
                runtime::ops::INTAKE_BACKLOG.dec();
                unanswered.moved(next.command_id, now);
                match republish(services, next, epoch).await {
                    Ok(sent) => permit.send(sent),
                    Err(e) => {
                        acker.abort();
                        return Err(e);
                    }
                }
            }
            _ = tokio::time::sleep_until(forgotten_at.into()), if !backlog.is_empty() && !may_move => {
                tracing::warn!(
                    "a moved command had no outcome within {} s: no longer waiting for it (a handler slow or down, or outcomes not reaching the intake)",
                    FORGET_AFTER.as_secs()
                );
            }
        }
    }
}

/// The command an outcome answers, from its subject.
fn answered(subject: &str) -> Option<CommandId> {
    subject.rsplit('.').next()?.parse().ok()
}

fn acknowledger_ended(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    r.map_err(anyhow::Error::from)
        .and_then(|r| r)
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("the intake's acknowledger ended"))
}

/// A command read and waiting for its move.
struct Read {
    msg: jetstream::Message,
    token: String,
    partition: u32,
    class: Class,
    tenant: TenantId,
    command_id: CommandId,
}

type Sent = (jetstream::Message, jetstream::context::PublishAckFuture);

/// Reads one message: the command and its partition (`None`: it was not a command,
/// and is being dead-lettered instead).
fn read(services: &Arc<Services>, msg: jetstream::Message, partitions: u32) -> Option<Read> {
    let token = partitions::command_token(&msg.subject).to_string();
    let cmd = match command::decode(&token, &msg.payload) {
        Ok(cmd) => cmd,
        Err(failure) => {
            let kind =
                command::CommandType::from_subject_token(&token).map_or("unknown", |t| t.as_str());
            runtime::ops::COMMANDS
                .with_label_values(&[kind, "invalid"])
                .inc();
            let services = services.clone();
            tokio::spawn(async move { crate::reject_unreadable(&services, msg, failure).await });
            return None;
        }
    };
    Some(Read {
        partition: partitions::partition_of(&partitions::key(&cmd.domain), partitions),
        class: Class::of(cmd.command_type),
        tenant: cmd.tenant_id,
        command_id: cmd.command_id,
        token,
        msg,
    })
}

/// Republishes one command to its partition.
async fn republish(services: &Services, read: Read, epoch: i128) -> anyhow::Result<Sent> {
    let seq = read
        .msg
        .info()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .stream_sequence;
    let mut headers = read.msg.headers.clone().unwrap_or_default();
    headers.insert("Nats-Msg-Id", format!("intake-{epoch}-{seq}").as_str());
    let ack = services
        .js
        .publish_with_headers(
            partitions::subject(read.partition, &read.token),
            headers,
            read.msg.payload.clone(),
        )
        .await?;
    Ok((read.msg, ack))
}

/// Acknowledges each command once its partition has it, in order; the first failure
/// ends the intake (it starts again at the first command not acknowledged).
async fn acknowledge(mut pending: tokio::sync::mpsc::Receiver<Sent>) -> anyhow::Result<()> {
    while let Some((msg, ack)) = pending.recv().await {
        ack.await
            .map_err(|e| anyhow::anyhow!("a command was not stored in its partition: {e}"))?;
        msg.ack()
            .await
            .map_err(|e| anyhow::anyhow!("cannot acknowledge a moved command: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_answers_the_command_its_subject_names() {
        let id = CommandId(uuid::Uuid::from_u128(7));
        assert_eq!(answered(&Outcome::subject(id)), Some(id));
        assert_eq!(answered("email_domains.outcomes.not-an-id"), None);
    }
}
