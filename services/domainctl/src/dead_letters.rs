//! `dead-letters list|retry`: the messages that could not be read as commands.

use crate::commands::{describe_outcome, outcome_code, publish_and_wait};
use crate::connect::{self, Endpoints};
use crate::error::{self, CtlError, CtlResult};
use crate::Io;
use async_nats::jetstream::stream::DirectGetErrorKind;
use email_domain_events::CommandId;
use runtime::dead_letters::DeadLetter;
use runtime::streams;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

fn preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

fn entry(seq: u64, l: &DeadLetter) -> serde_json::Value {
    let body = l.body().unwrap_or_default();
    json!({
        "seq": seq,
        "reason": l.reason,
        "error": l.error,
        "subject": l.subject,
        "headers": l.headers,
        "headers_truncated": l.headers_truncated,
        "body_base64": l.body_base64,
        "body_size": l.original_size(),
        "body_sha256": l.body_sha256,
        "body_truncated": l.body_truncated,
        "received_at": l.received_at,
        "body_preview": preview(&body, 200),
    })
}

/// How a letter's body is described in the text listing: its size, and what was kept
/// of it when it was cut.
fn body_summary(l: &DeadLetter, kept: usize) -> String {
    let size = l.original_size().unwrap_or(kept as u64);
    let mut s = if l.body_truncated {
        format!("{size} bytes, truncated: the first {kept} kept")
    } else {
        format!("{size} bytes")
    };
    if let Some(sha) = &l.body_sha256 {
        s.push_str(&format!(", sha256 {sha}"));
    }
    if l.headers_truncated {
        s.push_str("; some headers left out");
    }
    s
}

pub async fn list(
    ep: &Endpoints,
    io: &mut Io,
    reason: Option<&str>,
    limit: usize,
) -> CtlResult<i32> {
    let client = connect::nats(&ep.nats_url).await?;
    let js = connect::jetstream(client, &ep.nats_url).await?;
    let mut stream = js.get_stream(streams::DEAD_LETTERS).await.map_err(|e| {
        CtlError::unreachable(format!("cannot open {}: {e}", streams::DEAD_LETTERS))
    })?;
    let info = stream
        .info()
        .await
        .map_err(|e| CtlError::unreachable(format!("stream info: {e}")))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut found: Vec<(u64, DeadLetter)> = Vec::new();
    let mut unreadable = 0;
    let mut seq = last;
    while seq >= first.max(1) && found.len() < limit {
        match stream.direct_get(seq).await {
            Ok(m) => match serde_json::from_slice::<DeadLetter>(&m.payload) {
                Ok(l) if reason.is_none_or(|r| r == l.reason) => found.push((seq, l)),
                Ok(_) => {}
                Err(_) => unreadable += 1,
            },
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => {}
            Err(e) => {
                return Err(CtlError::unreachable(format!(
                    "reading dead letter {seq}: {e}"
                )))
            }
        }
        seq -= 1;
    }
    found.reverse();
    if io.json {
        io.json_value(&serde_json::Value::Array(
            found.iter().map(|(s, l)| entry(*s, l)).collect(),
        ));
        return Ok(error::OK);
    }
    if found.is_empty() {
        io.line("no dead letters");
    }
    for (seq, l) in &found {
        let body = l.body().unwrap_or_default();
        io.line(format!(
            "#{seq}  {}  {}  on {}",
            l.received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            l.reason,
            l.subject
        ));
        io.line(format!("    error: {}", l.error));
        io.line(format!(
            "    body ({}): {}",
            body_summary(l, body.len()),
            preview(&body, 120)
        ));
    }
    if unreadable > 0 {
        io.note(format!(
            "note: {unreadable} messages in {} are not dead letters",
            streams::DEAD_LETTERS
        ));
    }
    Ok(error::OK)
}

pub async fn retry(
    ep: &Endpoints,
    io: &mut Io,
    seq: u64,
    body_file: Option<&Path>,
    subject: Option<&str>,
    wait: Option<Duration>,
) -> CtlResult<i32> {
    let body = match body_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            CtlError::usage(format!("cannot read the body file {}: {e}", p.display()))
        })?),
        None => None,
    };
    let client = connect::nats(&ep.nats_url).await?;
    let js = connect::jetstream(client.clone(), &ep.nats_url).await?;
    let stream = js
        .get_stream_no_info(streams::DEAD_LETTERS)
        .await
        .map_err(|e| {
            CtlError::unreachable(format!("cannot open {}: {e}", streams::DEAD_LETTERS))
        })?;
    let msg = match stream.direct_get(seq).await {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => {
            return Err(CtlError::not_found(format!(
                "there is no dead letter with sequence {seq}"
            )))
        }
        Err(e) => {
            return Err(CtlError::unreachable(format!(
                "reading dead letter {seq}: {e}"
            )))
        }
    };
    let letter: DeadLetter = serde_json::from_slice(&msg.payload)
        .map_err(|e| CtlError::negative(format!("message {seq} is not a dead letter: {e}")))?;
    let body = match body {
        Some(b) => b,
        // Only the first bytes were kept: re-sending them would send a different command.
        None if letter.body_truncated => {
            return Err(CtlError::usage(format!(
                "dead letter {seq} kept only the first {} of its body's {} bytes (truncated to fit a NATS message), so it cannot be re-sent as it was; pass the whole or a corrected body with --body FILE",
                letter.body().map(|b| b.len()).unwrap_or(0),
                letter.original_size().map_or("?".into(), |n| n.to_string()),
            )))
        }
        None => letter.body().map_err(|e| {
            CtlError::negative(format!(
                "dead letter {seq} has an unreadable body_base64: {e}"
            ))
        })?,
    };
    let subject = subject.unwrap_or(&letter.subject).to_string();
    if !subject.starts_with("email_domains.commands.") {
        return Err(CtlError::usage(format!(
            "{subject:?} is not a command subject; name one with --subject email_domains.commands.<type>"
        )));
    }
    let command_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("command_id")
                .and_then(|c| c.as_str())
                .and_then(|c| Uuid::parse_str(c).ok())
        })
        .map(CommandId);
    let msg_id = command_id
        .map(|c| c.to_string())
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let mut sent = publish_and_wait(
        &client,
        &js,
        &subject,
        body.clone().into(),
        &msg_id,
        command_id,
        wait,
    )
    .await?;
    if sent.duplicate && sent.outcome.is_none() {
        // JetStream dropped it as a repeat of the original within its duplicate window;
        // the command id is the command's identity, the header only a hint, so re-send
        // under a fresh message id.
        let fresh = format!("{msg_id}.retry.{}", Uuid::new_v4());
        io.note(format!(
            "note: JetStream took Nats-Msg-Id {msg_id} for a repeat; re-sent as {fresh}"
        ));
        sent = publish_and_wait(
            &client,
            &js,
            &subject,
            body.clone().into(),
            &fresh,
            command_id,
            wait,
        )
        .await?;
    }
    let code = match &sent.outcome {
        Some(o) => outcome_code(o),
        None if sent.waited => error::UNREACHABLE,
        None => error::OK,
    };
    if io.json {
        io.json_value(&json!({
            "dead_letter_seq": seq,
            "reason": letter.reason,
            "subject": subject,
            "msg_id": sent.msg_id,
            "stream_seq": sent.stream_seq,
            "duplicate": sent.duplicate,
            "command_id": command_id,
            "body_preview": preview(&body, 200),
            "outcome": sent.outcome,
        }));
    } else {
        io.line(format!(
            "re-published dead letter #{seq} ({}) to {subject} as command stream sequence {} (Nats-Msg-Id {}); the dead letter stays",
            letter.reason, sent.stream_seq, sent.msg_id
        ));
        io.line(format!("    body: {}", preview(&body, 200)));
        match (&sent.outcome, command_id) {
            (Some(o), _) => io.line(describe_outcome(o)),
            (None, None) => io.line("the body has no readable command_id: no outcome to wait for"),
            (None, Some(_)) => {}
        }
    }
    if sent.waited && sent.outcome.is_none() {
        if let (Some(id), Some(w)) = (command_id, wait) {
            io.note(format!(
                "no outcome for command {id} within {} s: is the command handler running?",
                w.as_secs_f64()
            ));
        }
    }
    Ok(code)
}
