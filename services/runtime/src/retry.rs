//! Which failures are worth trying again, decided in one place for every retry loop.
//!
//! A failure is *permanent* when it depends only on the message itself (larger than
//! the server's max payload, a header block over JetStream's limit, a malformed
//! subject): sending the same bytes again can never succeed, so a loop that retries
//! it spins forever. Everything that depends on the server's or the network's state
//! (timeouts, no responders, a lost connection, a stream that is unavailable or
//! full) may go away and is *transient*. An error this module does not recognise is
//! transient: retrying a permanent error costs log lines, giving up on a transient
//! one loses a command.

use async_nats::jetstream::{self, context::PublishErrorKind, ErrorCode};
use std::error::Error as StdError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// May go away: try again (with backoff).
    Transient,
    /// Cannot go away by trying again: dead-letter it or fail with the reason.
    Permanent,
}

/// A failed operation, with whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub class: Class,
    pub message: String,
}

impl Failure {
    /// Classifies `e` (looking through its whole chain of sources).
    pub fn of(e: &(dyn StdError + 'static)) -> Self {
        Failure {
            class: classify(e),
            message: describe(e),
        }
    }

    /// Classifies an `anyhow` error by the errors in its chain.
    pub fn of_anyhow(e: &anyhow::Error) -> Self {
        let class = if e.chain().any(|c| class_of_one(c) == Some(Class::Permanent)) {
            Class::Permanent
        } else {
            Class::Transient
        };
        Failure {
            class,
            message: format!("{e:#}"),
        }
    }

    /// A failure known to be permanent (e.g. one classified earlier, kept as text).
    pub fn permanent(message: impl Into<String>) -> Self {
        Failure {
            class: Class::Permanent,
            message: message.into(),
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.class == Class::Permanent
    }
}

/// The class of `e`, from the first error in its chain that says.
pub fn classify(e: &(dyn StdError + 'static)) -> Class {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(class) = class_of_one(e) {
            return class;
        }
        next = e.source();
    }
    Class::Transient
}

/// `e` and its sources, joined (`async_nats` errors keep the server's words in the source).
fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        next = s.source();
    }
    text
}

/// What one error (not its sources) says about its class, if anything.
fn class_of_one(e: &(dyn StdError + 'static)) -> Option<Class> {
    if let Some(e) = e.downcast_ref::<jetstream::context::PublishError>() {
        return jetstream_publish(e);
    }
    if let Some(e) = e.downcast_ref::<async_nats::PublishError>() {
        return Some(core_publish(e.kind()));
    }
    if let Some(e) = e.downcast_ref::<async_nats::RequestError>() {
        return request(e.kind());
    }
    if let Some(e) = e.downcast_ref::<jetstream::Error>() {
        return Some(api(e.error_code()));
    }
    if e.downcast_ref::<async_nats::subject::SubjectError>()
        .is_some()
    {
        return Some(Class::Permanent);
    }
    None
}

/// `None` for `Other`, whose source (a JetStream API error, a subject error, …) decides.
fn jetstream_publish(e: &jetstream::context::PublishError) -> Option<Class> {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => Some(Class::Permanent),
        PublishErrorKind::Other => e.source().and_then(class_of_one),
        // Timeouts, no stream answering (no responders), a broken connection, too many
        // acks pending; and the optimistic-concurrency refusals, which the caller
        // handles before it ever asks (a new read makes them go away).
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::WrongLastMessageId => Some(Class::Transient),
    }
}

fn core_publish(kind: async_nats::client::PublishErrorKind) -> Class {
    use async_nats::client::PublishErrorKind as K;
    match kind {
        K::MaxPayloadExceeded | K::InvalidSubject => Class::Permanent,
        K::Send => Class::Transient,
    }
}

fn request(kind: async_nats::RequestErrorKind) -> Option<Class> {
    use async_nats::RequestErrorKind as K;
    match kind {
        K::MaxPayloadExceeded | K::InvalidSubject => Some(Class::Permanent),
        K::TimedOut | K::NoResponders => Some(Class::Transient),
        K::Other => None,
    }
}

/// A JetStream API error: the ones about the message's own size are permanent.
fn api(code: ErrorCode) -> Class {
    match code {
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM => {
            Class::Permanent
        }
        _ => Class::Transient,
    }
}

/// Records that `operation` was abandoned after a permanent failure: an error line
/// with the reason, and `email_domains_given_up_total{operation}`.
pub fn give_up(operation: &str, failure: &Failure) {
    tracing::error!(operation, error = %failure, "failed for good: giving up");
    crate::ops::GIVEN_UP.with_label_values(&[operation]).inc();
}

/// Publishes on JetStream and waits for the stream's ack, classifying a failure.
pub async fn publish(
    js: &jetstream::Context,
    subject: impl Into<String>,
    message: jetstream::message::PublishMessage,
) -> Result<jetstream::publish::PublishAck, Failure> {
    let ack = js
        .send_publish(subject.into(), message)
        .await
        .map_err(|e| Failure::of(&e))?;
    ack.await.map_err(|e| Failure::of(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::PublishError;

    fn api_error(code: u64, description: &str) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": code, "description": description
        }))
        .expect("an API error")
    }

    #[test]
    fn a_message_over_the_max_payload_is_permanent() {
        let e = PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(classify(&e), Class::Permanent);
        let core =
            async_nats::PublishError::new(async_nats::client::PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(classify(&core), Class::Permanent);
    }

    #[test]
    fn a_malformed_subject_is_permanent() {
        let core =
            async_nats::PublishError::new(async_nats::client::PublishErrorKind::InvalidSubject);
        assert_eq!(classify(&core), Class::Permanent);
        // JetStream's own check wraps the subject error as `Other`.
        let js = PublishError::with_source(
            PublishErrorKind::Other,
            async_nats::subject::SubjectError::InvalidFormat,
        );
        assert_eq!(classify(&js), Class::Permanent);
    }

    #[test]
    fn the_streams_size_refusals_are_permanent() {
        for code in [10054, 10097] {
            let e = PublishError::with_source(
                PublishErrorKind::Other,
                api_error(code, "too big for the stream"),
            );
            assert_eq!(classify(&e), Class::Permanent, "err_code {code}");
        }
    }

    #[test]
    fn timeouts_no_responders_and_lost_connections_are_transient() {
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            assert_eq!(
                classify(&PublishError::new(kind)),
                Class::Transient,
                "{kind:?}"
            );
        }
        let send = async_nats::PublishError::new(async_nats::client::PublishErrorKind::Send);
        assert_eq!(classify(&send), Class::Transient);
    }

    #[test]
    fn an_unavailable_or_full_stream_is_transient() {
        // 10008: cluster not available; 10023: insufficient resources.
        for code in [10008, 10023] {
            let e = PublishError::with_source(PublishErrorKind::Other, api_error(code, "later"));
            assert_eq!(classify(&e), Class::Transient, "err_code {code}");
        }
    }

    #[test]
    fn an_unknown_error_is_transient() {
        let e = std::io::Error::other("something else");
        assert_eq!(classify(&e), Class::Transient);
        assert!(!Failure::of_anyhow(&anyhow::anyhow!("who knows")).is_permanent());
    }

    #[test]
    fn a_permanent_error_inside_an_anyhow_chain_is_found() {
        let e = anyhow::Error::new(PublishError::new(PublishErrorKind::MaxPayloadExceeded))
            .context("publishing the outcome");
        let f = Failure::of_anyhow(&e);
        assert!(f.is_permanent());
        assert!(
            f.message.contains("publishing the outcome"),
            "{}",
            f.message
        );
    }

    #[test]
    fn the_description_keeps_the_servers_words() {
        let e = PublishError::with_source(
            PublishErrorKind::Other,
            api_error(10097, "header size exceeds maximum allowed of 64k"),
        );
        let f = Failure::of(&e);
        assert!(f.message.contains("64k"), "{}", f.message);
    }
}
