//! Dead letters: a message that cannot be read as a command is kept whole, with the
//! reason and a message a person can act on (contract §2.2).

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    pub error: String,
    pub subject: String,
    pub headers: BTreeMap<String, String>,
    pub body_base64: String,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl DeadLetter {
    pub fn new(
        reason: &str,
        error: &str,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        body: &[u8],
    ) -> Self {
        let mut map = BTreeMap::new();
        if let Some(h) = headers {
            for (name, values) in h.iter() {
                let joined: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                map.insert(name.to_string(), joined.join(", "));
            }
        }
        DeadLetter {
            reason: reason.to_string(),
            error: error.to_string(),
            subject: subject.to_string(),
            headers: map,
            body_base64: base64::engine::general_purpose::STANDARD.encode(body),
            received_at: chrono::Utc::now(),
        }
    }

    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.body_base64)
    }

    pub fn subject_for(reason: &str) -> String {
        format!("email_domains.dead_letters.{reason}")
    }
}

/// Publishes a dead letter; `dedup_id` (e.g. the command's stream sequence) keeps a
/// redelivered bad message from being dead-lettered twice.
pub async fn publish(
    js: &jetstream::Context,
    letter: &DeadLetter,
    dedup_id: &str,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(letter)?;
    js.send_publish(
        DeadLetter::subject_for(&letter.reason),
        Publish::build().payload(body.into()).message_id(dedup_id),
    )
    .await?
    .await?;
    Ok(())
}
