//! `domainctl status`: who does the command work, and how far behind it is.
//!
//! The intake (moving commands from the public work queue to their partitions) and
//! each partition: its owner (the handler instance holding its lease), its lag
//! (commands not finished) and its oldest waiting command. Exit status 1 when commands
//! wait where no instance works: a partition or the intake without a live owner.

use crate::connect::{self, Endpoints};
use crate::error::{self, CtlError, CtlResult};
use crate::Io;
use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use runtime::partitions::{self, Owner};
use runtime::streams;
use serde::Serialize;

/// One place commands wait: the intake or a partition.
#[derive(Debug, Serialize)]
pub struct Queue {
    /// `None` for the intake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The instance holding it (host:pid), `None` when no live instance does.
    pub owner: Option<String>,
    /// Commands not finished: waiting on the server, or taken and not acknowledged.
    pub lag: u64,
    /// When the oldest of them was published.
    pub oldest_waiting: Option<DateTime<Utc>>,
}

impl Queue {
    fn stuck(&self) -> bool {
        self.owner.is_none() && self.lag > 0
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    /// The live handler instances (host:pid).
    pub instances: Vec<String>,
    pub intake: Queue,
    pub partitions: Vec<Queue>,
}

pub async fn status(ep: &Endpoints, io: &mut Io, default_partitions: u32) -> CtlResult<i32> {
    let client = connect::nats(&ep.nats_url).await?;
    let js = connect::jetstream(client, &ep.nats_url).await?;
    let status = read(&js, default_partitions)
        .await
        .map_err(|e| CtlError::unreachable(format!("cannot read the partitions: {e:#}")))?;
    if io.json {
        io.json_value(&serde_json::to_value(&status).unwrap_or_default());
    } else {
        print(io, &status);
    }
    let stuck = status.intake.stuck() || status.partitions.iter().any(Queue::stuck);
    if stuck {
        io.note("commands are waiting where no handler instance works: start one (or wait for a lease to move)");
    }
    Ok(if stuck { error::NEGATIVE } else { error::OK })
}

/// Reads the whole picture from NATS.
pub async fn read(js: &jetstream::Context, default_partitions: u32) -> anyhow::Result<Status> {
    let kv = js.get_key_value(partitions::BUCKET).await?;
    let handlers = partitions::Group::handlers();
    let count = partition_count(&kv, default_partitions).await?;
    let owners = partitions::owners(&kv, &handlers, count).await?;
    let instances = partitions::live_members(&kv, &handlers)
        .await?
        .into_values()
        .map(|m| m.name)
        .collect();
    let stream = js.get_stream(partitions::STREAM).await?;
    let mut queues = Vec::with_capacity(count as usize);
    for (p, owner) in owners.into_iter().enumerate() {
        let p = p as u32;
        queues.push(Queue {
            partition: Some(p),
            owner: live_name(owner),
            lag: consumer_lag(&stream, &partitions::consumer(p)).await,
            oldest_waiting: oldest(&stream, &partitions::filter(p)).await,
        });
    }
    let commands = js.get_stream(streams::COMMANDS).await?;
    let leases = js.get_key_value(streams::LEASES_BUCKET).await?;
    let intake_owner = leases
        .get(command_handler_lease())
        .await?
        .and_then(|b| serde_json::from_slice::<Owner>(&b).ok());
    let intake = Queue {
        partition: None,
        owner: live_name(intake_owner),
        lag: consumer_lag(&commands, command_handler_lease()).await,
        oldest_waiting: oldest(&commands, streams::COMMAND_SUBJECTS).await,
    };
    Ok(Status {
        instances,
        intake,
        partitions: queues,
    })
}

/// The intake's lease and consumer name (the handler's `intake::CONSUMER`).
fn command_handler_lease() -> &'static str {
    "command-handler"
}

/// The partitions there are: those ever leased, else the configured number.
async fn partition_count(kv: &kv::Store, default: u32) -> anyhow::Result<u32> {
    let leased = partitions::leased(kv, &partitions::Group::handlers()).await?;
    Ok(leased.iter().max().map_or(default, |last| last + 1))
}

fn live_name(owner: Option<Owner>) -> Option<String> {
    owner
        .filter(Owner::is_live)
        .map(|o| if o.name.is_empty() { o.holder } else { o.name })
}

/// A consumer's unfinished commands (0 when it does not exist yet).
async fn consumer_lag(stream: &jetstream::stream::Stream, name: &str) -> u64 {
    let consumer: Result<jetstream::consumer::PullConsumer, _> = stream.get_consumer(name).await;
    match consumer {
        Ok(mut c) => match c.info().await {
            Ok(i) => i.num_pending + i.num_ack_pending as u64,
            Err(_) => 0,
        },
        Err(_) => 0,
    }
}

/// The publish time of the first message under `filter` (in a work queue: the oldest
/// one no instance has finished).
async fn oldest(stream: &jetstream::stream::Stream, filter: &str) -> Option<DateTime<Utc>> {
    let msg = stream
        .direct_get_next_for_subject(filter, None)
        .await
        .ok()?;
    let nanos = msg.time.unix_timestamp_nanos();
    Some(DateTime::from_timestamp_nanos(i64::try_from(nanos).ok()?))
}

fn print(io: &mut Io, s: &Status) {
    io.line(format!("handler instances: {}", s.instances.len()));
    for i in &s.instances {
        io.line(format!("  {i}"));
    }
    io.line(format!(
        "{:<10} {:<28} {:>8}  oldest waiting",
        "queue", "owner", "lag"
    ));
    let now = Utc::now();
    let rows = std::iter::once(("intake".to_string(), &s.intake)).chain(
        s.partitions
            .iter()
            .map(|q| (format!("p{}", q.partition.unwrap_or(0)), q)),
    );
    for (name, q) in rows {
        let oldest = q.oldest_waiting.map_or("-".to_string(), |t| {
            format!("{} ago", crate::inspect::human_age(now - t))
        });
        io.line(format!(
            "{:<10} {:<28} {:>8}  {}",
            name,
            q.owner.as_deref().unwrap_or("NONE"),
            q.lag,
            oldest
        ));
    }
}
