//! One owned partition: its commands, in publish order, into the dispatcher.
//!
//! Taking a partition starts its consumer afresh at the first command still in the
//! work queue (the first one no instance finished), so a new owner neither waits out
//! the ack wait for what the old one held nor takes the commands out of order. A
//! command the old owner handled but did not acknowledge comes again and is
//! recognised by the outcome ledger.

use crate::dispatch::Dispatcher;
use crate::lane::{Services, Work};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use email_domain_events::command;
use futures::StreamExt;
use runtime::partitions;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How long a command may go unacknowledged before the server hands it out again.
pub const ACK_WAIT: Duration = Duration::from_secs(300);

/// How often a partition's lag is read for `/metrics`.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Commands of one partition taken in and not finished yet.
#[derive(Clone, Default)]
pub struct InFlight(Arc<(AtomicUsize, Notify)>);

/// One command counted in its partition's [`InFlight`] until dropped.
pub struct InFlightGuard(Arc<(AtomicUsize, Notify)>);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0 .0.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight, at most `max`; whether it got there.
    pub async fn drained(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.0 .1.notified();
            if self.count() == 0 {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.count() == 0,
            }
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .1.notify_waiters();
        }
    }
}

/// A partition this instance is consuming.
pub struct Running {
    partition: u32,
    stop: watch::Sender<bool>,
    in_flight: InFlight,
    dispatcher: Dispatcher,
}

impl Running {
    pub fn start(
        partition: u32,
        services: Arc<Services>,
        dispatcher: Dispatcher,
        window: i64,
    ) -> Running {
        let (stop, stopped) = watch::channel(false);
        let in_flight = InFlight::default();
        dispatcher.take_up(partition);
        let consumer = Consumer {
            partition,
            services,
            dispatcher: dispatcher.clone(),
            in_flight: in_flight.clone(),
            window,
        };
        tokio::spawn(consumer.run(stopped));
        Running {
            partition,
            stop,
            in_flight,
            dispatcher,
        }
    }

    /// Stops taking commands and forgets those not started: the next owner gets them
    /// (one the consumer receives after this is not queued either).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        let dropped = self.dispatcher.drop_partition(self.partition);
        runtime::ops::PARTITION_LAG
            .with_label_values(&[&self.partition.to_string()])
            .set(0);
        tracing::info!(
            partition = self.partition,
            dropped,
            "partition stopped; its queued commands go to the next owner"
        );
    }

    /// Stops, then waits (at most `max`) for the commands already started to finish.
    pub async fn stop_and_finish(self, max: Duration) {
        self.stop();
        if !self.in_flight.drained(max).await {
            tracing::warn!(
                partition = self.partition,
                left = self.in_flight.count(),
                "handing over with commands still running (the next owner's ledger recognises them)"
            );
        }
    }
}

struct Consumer {
    partition: u32,
    services: Arc<Services>,
    dispatcher: Dispatcher,
    in_flight: InFlight,
    window: i64,
}

impl Consumer {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut fresh = true;
        loop {
            tokio::select! {
                r = self.consume(fresh) => match r {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(partition = self.partition, error = %e, "partition consumer stopped; starting again"),
                },
                _ = stopped.wait_for(|s| *s) => return,
            }
            fresh = false;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }

    /// The partition's durable consumer. `fresh` (just taken over): made anew, so it
    /// starts at the first unfinished command at once.
    async fn open(&self, fresh: bool) -> anyhow::Result<jetstream::consumer::PullConsumer> {
        let stream = self.services.js.get_stream(partitions::STREAM).await?;
        let name = partitions::consumer(self.partition);
        if fresh {
            runtime::streams::forget_consumer(&stream, &name).await?;
        }
        let consumer = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: partitions::filter(self.partition),
                    ack_policy: AckPolicy::Explicit,
                    // Long: a new owner does not wait for it (the consumer is made
                    // anew), so it only matters for an owner that is alive, and a short
                    // one would cost a progress ack per queued command every few seconds.
                    ack_wait: ACK_WAIT,
                    max_ack_pending: self.window,
                    ..Default::default()
                },
            )
            .await?;
        Ok(consumer)
    }

    async fn consume(&self, fresh: bool) -> anyhow::Result<()> {
        let mut consumer = self.open(fresh).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(500)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        let lag = runtime::ops::PARTITION_LAG.with_label_values(&[&self.partition.to_string()]);
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                _ = lag_tick.tick() => {
                    if let Ok(info) = consumer.info().await {
                        lag.set((info.num_pending + info.num_ack_pending as u64) as i64);
                    }
                    continue;
                }
            };
            match msg {
                Some(Ok(msg)) => self.take(msg),
                Some(Err(e)) => {
                    tracing::warn!(partition = self.partition, error = %e, "partition stream error")
                }
                None => anyhow::bail!("the partition's message stream ended"),
            }
        }
    }

    /// One command into its lane (the intake sent only readable ones; one that is
    /// not readable after all is dead-lettered like at the front door).
    fn take(&self, msg: jetstream::Message) {
        let token = partitions::command_token(&msg.subject).to_string();
        match command::decode(&token, &msg.payload) {
            Ok(cmd) => {
                let key = partitions::key(&cmd.domain);
                let idx = crate::lane_index(&key, self.dispatcher.lanes());
                let work = Work {
                    msg,
                    cmd,
                    received: std::time::Instant::now(),
                    partition: self.partition,
                    in_flight: self.in_flight.enter(),
                };
                self.dispatcher.push(idx, work);
            }
            Err(failure) => {
                let services = self.services.clone();
                tokio::spawn(
                    async move { crate::reject_unreadable(&services, msg, failure).await },
                );
            }
        }
    }
}
