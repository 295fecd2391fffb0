//! Outcomes: published once per command, and read back to answer a command id that
//! comes again (the outcome stream doubles as the ledger of handled command ids).

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use bytes::Bytes;
use email_domain_events::outcome::Outcome;
use email_domain_events::CommandId;

use crate::retry::Failure;
use crate::streams::OUTCOMES;

#[derive(Clone)]
pub struct Outcomes {
    js: jetstream::Context,
    stream: jetstream::stream::Stream<()>,
}

impl Outcomes {
    pub async fn open(js: &jetstream::Context) -> anyhow::Result<Self> {
        Ok(Outcomes {
            js: js.clone(),
            stream: js.get_stream_no_info(OUTCOMES).await?,
        })
    }

    /// The stored outcome of a command id, if it was handled before.
    pub async fn lookup(&self, id: CommandId) -> anyhow::Result<Option<Bytes>> {
        match self
            .stream
            .direct_get_last_for_subject(Outcome::subject(id))
            .await
        {
            Ok(msg) => Ok(Some(msg.payload)),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(anyhow::anyhow!("outcome lookup failed: {e}")),
        }
    }

    /// Publishes an outcome and returns once JetStream has stored it.
    pub async fn publish(&self, outcome: &Outcome) -> Result<(), Failure> {
        let id = outcome
            .command_id
            .expect("outcomes that are published have a command id");
        let body = serde_json::to_vec(outcome).expect("an outcome serialises");
        self.publish_raw(id, body.into()).await
    }

    /// Publishes stored outcome bytes again (the same outcome for a repeated command id).
    pub async fn publish_raw(&self, id: CommandId, body: Bytes) -> Result<(), Failure> {
        let message = crate::trace::message().payload(body);
        crate::retry::publish(&self.js, Outcome::subject(id), message).await?;
        Ok(())
    }
}
