//! The event store on JetStream: one subject per domain registration, appends guarded
//! by `Nats-Expected-Last-Subject-Sequence`, reads by Direct Get from a snapshot on.

use async_nats::jetstream::{self, context::PublishErrorKind, kv, stream::DirectGetErrorKind};
use email_domain_events::event::{self, Event};
use email_domain_events::{evolve, DomainId, DomainState, TenantId};
use serde::{Deserialize, Serialize};

use crate::streams::{EVENTS, SNAPSHOTS_BUCKET};

/// A domain's state and the stream sequence of its last event (0: no events yet).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: Option<DomainState>,
    pub last_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to this domain since we read it: reload and decide again.
    #[error("the domain changed since it was read")]
    Conflict,
    /// May go away (NATS unavailable, a timeout): try again.
    #[error("append failed: {0}")]
    Other(String),
    /// Cannot go away by trying again (the event is larger than the server takes).
    #[error("the event cannot be stored: {0}")]
    Permanent(String),
}

impl AppendError {
    fn classified(e: &(dyn std::error::Error + 'static)) -> Self {
        let failure = crate::retry::Failure::of(e);
        if failure.is_permanent() {
            AppendError::Permanent(failure.message)
        } else {
            AppendError::Other(failure.message)
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// Bumped when `DomainState` changes shape; other formats are ignored (replayed).
    format: u32,
    seq: u64,
    state: DomainState,
}

const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Clone)]
pub struct EventStore {
    js: jetstream::Context,
    stream: jetstream::stream::Stream<()>,
    snapshots: kv::Store,
    snapshot_every: u64,
}

impl EventStore {
    pub async fn open(js: &jetstream::Context, snapshot_every: u64) -> anyhow::Result<Self> {
        let stream = js.get_stream_no_info(EVENTS).await?;
        let snapshots = js.get_key_value(SNAPSHOTS_BUCKET).await?;
        Ok(EventStore {
            js: js.clone(),
            stream,
            snapshots,
            snapshot_every: snapshot_every.max(1),
        })
    }

    /// Loads a domain: its latest snapshot, then the events after it. The snapshot and
    /// the subject's last sequence are read at once; the tail is read up to that last
    /// sequence and no further, because a "next message" probe past the end of a
    /// subject makes the server scan the rest of the stream.
    pub async fn load(&self, tenant: TenantId, domain: DomainId) -> anyhow::Result<Loaded> {
        let subject = event::subject(tenant, domain);
        let (snapshot, last) = futures::join!(
            self.snapshots.get(domain.to_string()),
            self.stream.direct_get_last_for_subject(subject.clone())
        );
        let last = match last {
            Ok(msg) => msg,
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => {
                return Ok(Loaded::default())
            }
            Err(e) => return Err(anyhow::anyhow!("reading {subject}: {e}")),
        };
        let mut loaded = Loaded::default();
        if let Some(bytes) = snapshot? {
            if let Ok(s) = serde_json::from_slice::<Snapshot>(&bytes) {
                if s.format == SNAPSHOT_FORMAT
                    && s.state.tenant_id == tenant
                    && s.seq <= last.sequence
                {
                    loaded = Loaded {
                        state: Some(s.state),
                        last_seq: s.seq,
                    };
                }
            }
        }
        while loaded.last_seq < last.sequence {
            let msg = if loaded.last_seq + 1 >= last.sequence {
                None
            } else {
                Some(
                    self.stream
                        .direct_get_next_for_subject(subject.clone(), Some(loaded.last_seq + 1))
                        .await
                        .map_err(|e| anyhow::anyhow!("reading {subject}: {e}"))?,
                )
            };
            let (seq, payload) = match &msg {
                Some(m) if m.sequence < last.sequence => (m.sequence, &m.payload),
                _ => (last.sequence, &last.payload),
            };
            let ev = Event::from_json(payload).map_err(|e| {
                anyhow::anyhow!("event at stream sequence {seq} is unreadable: {e}")
            })?;
            loaded.state = evolve(loaded.state.take(), &ev);
            loaded.last_seq = seq;
        }
        Ok(loaded)
    }

    /// Every event of a domain, in order, with its stream sequence.
    pub async fn history(
        &self,
        tenant: TenantId,
        domain: DomainId,
    ) -> anyhow::Result<Vec<(u64, Event)>> {
        let subject = event::subject(tenant, domain);
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            match self
                .stream
                .direct_get_next_for_subject(subject.clone(), Some(next))
                .await
            {
                Ok(msg) => {
                    out.push((msg.sequence, Event::from_json(&msg.payload)?));
                    next = msg.sequence + 1;
                }
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => return Ok(out),
                Err(e) => return Err(anyhow::anyhow!("reading {subject}: {e}")),
            }
        }
    }

    /// Appends `event` if the domain's last event is still at `expected_last_seq`
    /// (0: the domain has no events). Returns the new event's stream sequence.
    pub async fn append(&self, event: &Event, expected_last_seq: u64) -> Result<u64, AppendError> {
        let publish = crate::trace::message()
            .payload(event.to_json().into())
            .message_id(event.event_id.to_string())
            .expected_last_subject_sequence(expected_last_seq);
        let ack = self
            .js
            .send_publish(event.subject(), publish)
            .await
            .map_err(|e| AppendError::classified(&e))?
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::WrongLastSequence => AppendError::Conflict,
                _ => AppendError::classified(&e),
            })?;
        Ok(ack.sequence)
    }

    /// Writes a snapshot every `snapshot_every` events. Awaited, not spawned: puts
    /// racing in the background could land out of order and leave an older snapshot
    /// last. A failed snapshot costs a longer read, never correctness.
    pub async fn maybe_snapshot(&self, state: &DomainState, seq: u64) {
        if !state.version.is_multiple_of(self.snapshot_every) {
            return;
        }
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            seq,
            state: state.clone(),
        };
        match serde_json::to_vec(&snapshot) {
            Ok(body) => {
                if let Err(e) = self
                    .snapshots
                    .put(state.domain_id.to_string(), body.into())
                    .await
                {
                    tracing::warn!(error = %e, "snapshot not written");
                }
            }
            Err(e) => tracing::warn!(error = %e, "snapshot not serialised"),
        }
    }
}
