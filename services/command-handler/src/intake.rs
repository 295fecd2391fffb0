//! The intake: moves commands from the public work queue to their partitions, in
//! publish order. One instance at a time does it (a lease), since order across the
//! move is what per-domain order rests on; it only reads, hashes and republishes, so
//! one keeps up with many handlers.
//!
//! Each command is republished with a message id of its own (the commands stream's
//! creation time and sequence), and acknowledged once the partition stream has it. A
//! failed republish starts the intake again from the first command not acknowledged,
//! in order; what was already republished is dropped by the partition stream's
//! duplicate window. Unreadable messages are dead-lettered here, at the front door.

use crate::lane::Services;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use email_domain_events::command;
use futures::StreamExt;
use runtime::{lease::Lease, partitions, streams, Shutdown};
use std::sync::Arc;
use std::time::Duration;

/// The durable consumer of `EMAIL_DOMAIN_COMMANDS` (the name it had when the handler
/// consumed it itself, so an older instance and the intake exclude each other).
pub const CONSUMER: &str = "command-handler";
/// Commands republished and not yet acknowledged by the partition stream.
const IN_FLIGHT: usize = 4096;

/// Runs the intake whenever this instance holds its lease, until `shutdown`.
pub async fn run(services: Arc<Services>, lease: Lease, partitions: u32, shutdown: Shutdown) {
    loop {
        let Some(mut guard) = lease.acquire(&shutdown).await else {
            break;
        };
        tokio::select! {
            r = forward(&services, partitions) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "intake stopped; starting again from the first command not moved");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            _ = guard.lost() => tracing::warn!("intake lease lost: standing by"),
            _ = shutdown.wait() => {}
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
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
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
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            r = &mut acker => return Err(r.map_err(anyhow::Error::from).and_then(|r| r).err()
                .unwrap_or_else(|| anyhow::anyhow!("the intake's acknowledger ended"))),
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "command stream error");
                continue;
            }
            None => anyhow::bail!("the command stream ended"),
        };
        match move_one(services, msg, partitions, epoch).await {
            Ok(Some(sent)) => {
                if acks.send(sent).await.is_err() {
                    acker.abort();
                    anyhow::bail!("the intake's acknowledger ended");
                }
            }
            Ok(None) => {}
            Err(e) => {
                acker.abort();
                return Err(e);
            }
        }
    }
}

type Sent = (jetstream::Message, jetstream::context::PublishAckFuture);

/// Republishes one command to its partition (`None`: it was not a command, and was
/// dead-lettered instead).
async fn move_one(
    services: &Arc<Services>,
    msg: jetstream::Message,
    partitions: u32,
    epoch: i128,
) -> anyhow::Result<Option<Sent>> {
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
            return Ok(None);
        }
    };
    let key = partitions::key(&cmd.domain);
    let partition = partitions::partition_of(&key, partitions);
    let seq = msg
        .info()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .stream_sequence;
    let mut headers = msg.headers.clone().unwrap_or_default();
    headers.insert("Nats-Msg-Id", format!("intake-{epoch}-{seq}").as_str());
    let ack = services
        .js
        .publish_with_headers(
            partitions::subject(partition, &token),
            headers,
            msg.payload.clone(),
        )
        .await?;
    Ok(Some((msg, ack)))
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
