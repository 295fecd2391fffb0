//! Operator commands: published like any client would, then the outcome is awaited.

use crate::connect::{self, Endpoints};
use crate::error::{self, CtlError, CtlResult};
use crate::inspect::normalise;
use crate::{Io, SendOpts, Target2};
use async_nats::jetstream::{self, message::PublishMessage, stream::DirectGetErrorKind};
use email_domain_events::outcome::{Outcome, Verdict};
use email_domain_events::{Command, CommandId, CommandType, TenantId};
use futures::StreamExt;
use runtime::streams;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

pub enum Kind {
    Register { region: Option<String> },
    DnsConfigured,
    Refresh,
    Delete,
    Fail { reason: String },
    Release { reason: String },
}

/// `None`: do not wait.
pub fn wait_for(timeout: f64, no_wait: bool) -> Option<Duration> {
    if no_wait {
        None
    } else {
        Some(Duration::from_secs_f64(timeout.max(0.0)))
    }
}

fn operator_name(opts: &SendOpts) -> String {
    opts.operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Builds the contract body of an operator command.
pub fn build(kind: &Kind, target: &Target2, opts: &SendOpts) -> Command {
    let who = format!("operator:{}", operator_name(opts));
    let (command_type, region, reason, requested_by) = match kind {
        Kind::Register { region } => (CommandType::RegisterDomain, region.clone(), None, who),
        Kind::DnsConfigured => (CommandType::DnsConfigured, None, None, who),
        Kind::Refresh => (CommandType::RefreshStatus, None, None, who),
        Kind::Delete => (CommandType::DeleteDomain, None, None, who),
        Kind::Fail { reason } => (CommandType::FailDomain, None, Some(reason.clone()), who),
        Kind::Release { reason } => (
            CommandType::DeleteDomain,
            None,
            Some(reason.clone()),
            format!("{who} (release: {reason})"),
        ),
    };
    Command {
        command_type,
        command_id: CommandId(opts.command_id.unwrap_or_else(Uuid::new_v4)),
        tenant_id: TenantId(target.tenant),
        domain: target.domain.clone(),
        requested_by: Some(cut(&requested_by, 256)),
        region,
        domain_id: None,
        reason: reason.map(|r| cut(&r, 2048)),
        provider_result: None,
        correlation_id: None,
    }
}

/// The stream sequence of the stored outcome of `id`, and its body.
pub async fn stored_outcome(
    js: &jetstream::Context,
    id: CommandId,
) -> anyhow::Result<Option<(u64, bytes::Bytes)>> {
    let stream = js.get_stream_no_info(streams::OUTCOMES).await?;
    match stream
        .direct_get_last_for_subject(Outcome::subject(id))
        .await
    {
        Ok(m) => Ok(Some((m.sequence, m.payload))),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("outcome lookup failed: {e}")),
    }
}

/// What publishing a command and waiting for it gave.
pub struct Sent {
    pub stream_seq: u64,
    pub msg_id: String,
    pub duplicate: bool,
    /// The outcome, if one came in time.
    pub outcome: Option<serde_json::Value>,
    pub waited: bool,
}

/// Publishes `body` to `subject` with `Nats-Msg-Id: msg_id` and, for a command id,
/// waits for its outcome: subscribed before publishing, and polling the stored
/// outcome too, so neither a fast answer nor a missed message is lost. An outcome
/// stored before this publish does not count, unless JetStream dropped the publish
/// as a duplicate (then the stored one is the answer).
pub async fn publish_and_wait(
    client: &async_nats::Client,
    js: &jetstream::Context,
    subject: &str,
    body: bytes::Bytes,
    msg_id: &str,
    command_id: Option<CommandId>,
    wait: Option<Duration>,
) -> CtlResult<Sent> {
    let mut sub = match (command_id, wait) {
        (Some(id), Some(_)) => Some(
            client
                .subscribe(Outcome::subject(id))
                .await
                .map_err(|e| CtlError::unreachable(format!("cannot subscribe to outcomes: {e}")))?,
        ),
        _ => None,
    };
    let before = match command_id {
        Some(id) => stored_outcome(js, id)
            .await
            .map_err(|e| CtlError::unreachable(format!("{e:#}")))?,
        None => None,
    };
    let before_seq = before.as_ref().map(|(s, _)| *s).unwrap_or(0);
    let ack = js
        .send_publish(
            subject.to_string(),
            PublishMessage::build().payload(body).message_id(msg_id),
        )
        .await
        .map_err(|e| CtlError::unreachable(format!("cannot publish to {subject}: {e}")))?
        .await
        .map_err(|e| {
            CtlError::unreachable(format!(
                "JetStream did not store the message on {subject}: {e}"
            ))
        })?;
    let mut sent = Sent {
        stream_seq: ack.sequence,
        msg_id: msg_id.to_string(),
        duplicate: ack.duplicate,
        outcome: None,
        waited: false,
    };
    let (Some(id), Some(wait)) = (command_id, wait) else {
        return Ok(sent);
    };
    sent.waited = true;
    if ack.duplicate {
        if let Some((_, b)) = before {
            sent.outcome = serde_json::from_slice(&b).ok();
            return Ok(sent);
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(sent),
            m = async { match sub.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                if let Some(m) = m {
                    if let Ok(v) = serde_json::from_slice(&m.payload) {
                        sent.outcome = Some(v);
                        return Ok(sent);
                    }
                }
            }
            _ = poll.tick() => {
                if let Ok(Some((seq, b))) = stored_outcome(js, id).await {
                    if seq > before_seq {
                        if let Ok(v) = serde_json::from_slice(&b) {
                            sent.outcome = Some(v);
                            return Ok(sent);
                        }
                    }
                }
            }
        }
    }
}

/// Exit code for an outcome: 0 accepted, 3 `domain_not_found`, else 1.
pub fn outcome_code(v: &serde_json::Value) -> i32 {
    match serde_json::from_value::<Outcome>(v.clone()) {
        Ok(o) if o.outcome == Verdict::Accepted => error::OK,
        Ok(o)
            if o.reason
                .as_ref()
                .is_some_and(|r| r.code == "domain_not_found") =>
        {
            error::NOT_FOUND
        }
        _ => error::NEGATIVE,
    }
}

pub fn describe_outcome(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    match v.get("outcome").and_then(|o| o.as_str()) {
        Some("accepted") => format!("accepted: {} (domain id {})", s("domain"), s("domain_id")),
        Some("rejected") => {
            let code = v
                .pointer("/reason/code")
                .and_then(|x| x.as_str())
                .unwrap_or("?");
            let msg = v
                .pointer("/reason/message")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            format!("rejected ({code}): {msg}")
        }
        _ => format!("outcome: {v}"),
    }
}

pub async fn operator(
    ep: &Endpoints,
    io: &mut Io,
    kind: Kind,
    target: &Target2,
    opts: &SendOpts,
) -> CtlResult<i32> {
    let command = build(&kind, target, opts);
    let client = connect::nats(&ep.nats_url).await?;
    let js = connect::jetstream(client.clone(), &ep.nats_url).await?;
    let body =
        serde_json::to_vec(&command.to_body()).map_err(|e| CtlError::negative(e.to_string()))?;
    let wait = wait_for(opts.timeout, opts.no_wait);
    let sent = publish_and_wait(
        &client,
        &js,
        &command.subject(),
        body.into(),
        &command.command_id.to_string(),
        Some(command.command_id),
        wait,
    )
    .await?;
    let code = match &sent.outcome {
        Some(o) => outcome_code(o),
        None if sent.waited => error::UNREACHABLE,
        None => error::OK,
    };
    if io.json {
        io.json_value(&json!({
            "command": command.to_body(),
            "subject": command.subject(),
            "stream_seq": sent.stream_seq,
            "duplicate": sent.duplicate,
            "outcome": sent.outcome,
        }));
    } else {
        io.line(format!(
            "sent {} for {} (tenant {}) as command {}{}",
            command.command_type.as_str(),
            normalise(&command.domain),
            command.tenant_id,
            command.command_id,
            if sent.duplicate {
                " (JetStream saw this id moments ago: the earlier outcome stands)"
            } else {
                ""
            }
        ));
        if let Some(o) = &sent.outcome {
            io.line(describe_outcome(o));
        }
    }
    if sent.waited && sent.outcome.is_none() {
        io.note(format!(
            "no outcome for command {} within {} s: is the command handler running? The command stays queued; look later with `nats sub email_domains.outcomes.{}`",
            command.command_id, opts.timeout, command.command_id
        ));
    }
    Ok(code)
}
