//! Dead letters: a message that cannot be read as a command is kept, with the reason
//! and a message a person can act on (docs/interface.md §2.2).
//!
//! A letter is one NATS message, so it can hold no more than the server's max
//! payload, while the message it keeps may have been that large itself (and base64
//! makes a body a third larger). What does not fit is cut: the letter keeps the
//! body's first bytes and says so (`body_truncated`), with the original size and a
//! SHA-256 of the whole body, so the original can still be recognised.

use crate::retry::Failure;
use async_nats::jetstream::{self, message::PublishMessage as Publish};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    pub error: String,
    pub subject: String,
    /// The original headers (several values of one name joined with `, `); the ones
    /// that did not fit are left out (`headers_truncated`).
    pub headers: BTreeMap<String, String>,
    /// The body, or its first bytes when `body_truncated`.
    pub body_base64: String,
    /// The original body's size in bytes (absent in letters written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size: Option<u64>,
    /// SHA-256 of the whole original body, lower-case hex (absent in older letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    /// `body_base64` holds only the body's first bytes: the letter could not hold it all.
    #[serde(default)]
    pub body_truncated: bool,
    /// Some headers were left out to make room.
    #[serde(default)]
    pub headers_truncated: bool,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// The message a dead letter keeps.
#[derive(Clone, Copy)]
pub struct Original<'a> {
    pub subject: &'a str,
    pub headers: Option<&'a async_nats::HeaderMap>,
    pub body: &'a [u8],
}

/// An error longer than this is cut: it is for a person to read, and a decoder's
/// message can quote what it could not read.
const MAX_ERROR_BYTES: usize = 4096;

impl DeadLetter {
    /// A letter keeping the whole message, however large (see [`DeadLetter::within`]).
    pub fn new(
        reason: &str,
        error: &str,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        body: &[u8],
    ) -> Self {
        let original = Original {
            subject,
            headers,
            body,
        };
        Self::within(reason, error, original, usize::MAX)
    }

    /// A letter whose JSON takes at most `max_json` bytes: headers are kept while they
    /// take no more than half the room (a body needs it more), then as much of the
    /// body as fits.
    pub fn within(reason: &str, error: &str, original: Original<'_>, max_json: usize) -> Self {
        let mut letter = DeadLetter {
            reason: reason.to_string(),
            error: cut_at_char(error, MAX_ERROR_BYTES),
            subject: original.subject.to_string(),
            headers: BTreeMap::new(),
            body_base64: String::new(),
            body_size: Some(original.body.len() as u64),
            body_sha256: Some(sha256_hex(original.body)),
            body_truncated: false,
            headers_truncated: false,
            received_at: chrono::Utc::now(),
        };
        let whole_body = base64_len(original.body.len());
        let room = max_json.saturating_sub(json_len(&letter));
        let header_room = room.saturating_sub(whole_body).max(room / 2);
        letter.keep_headers(original.headers, header_room);
        let body_room = max_json.saturating_sub(json_len(&letter));
        letter.keep_body(original.body, body_room);
        letter
    }

    /// Keeps headers, in name order, while their JSON takes at most `room` bytes.
    fn keep_headers(&mut self, headers: Option<&async_nats::HeaderMap>, room: usize) {
        let mut used = 0;
        for (name, value) in joined_headers(headers) {
            // `"name":"value",` as JSON.
            let cost = json_string_len(&name) + json_string_len(&value) + 2;
            if used + cost <= room {
                used += cost;
                self.headers.insert(name, value);
            } else {
                self.headers_truncated = true;
            }
        }
    }

    /// Keeps the body, or as many of its first bytes as `room` bytes of base64 hold.
    fn keep_body(&mut self, body: &[u8], room: usize) {
        let engine = &base64::engine::general_purpose::STANDARD;
        if base64_len(body.len()) <= room {
            self.body_base64 = engine.encode(body);
            return;
        }
        // Whole groups of three bytes: no padding, and `true` is shorter than `false`.
        let kept = room / 4 * 3;
        self.body_base64 = engine.encode(&body[..kept]);
        self.body_truncated = true;
    }

    /// The kept body (all of it unless `body_truncated`).
    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.body_base64)
    }

    /// The original body's size: recorded, or (in older letters) the kept body's.
    pub fn original_size(&self) -> Option<u64> {
        self.body_size
            .or_else(|| self.body().ok().map(|b| b.len() as u64))
    }

    pub fn subject_for(reason: &str) -> String {
        format!("email_domains.dead_letters.{reason}")
    }
}

/// The header a letter is published with: its dedup id.
const DEDUP_HEADER: &str = "Nats-Msg-Id";

/// How many bytes of JSON a letter published with `dedup_id` may take on a connection
/// whose server accepts `max_payload` bytes (headers included).
pub fn max_json(max_payload: usize, dedup_id: &str) -> usize {
    // "NATS/1.0\r\n" + "Nats-Msg-Id: <id>\r\n" + "\r\n", as the server counts them.
    let headers = "NATS/1.0\r\n".len() + DEDUP_HEADER.len() + 2 + dedup_id.len() + 2 + 2;
    max_payload.saturating_sub(headers)
}

/// A letter for `original` that fits the connection's current max payload.
pub fn fitted(
    js: &jetstream::Context,
    dedup_id: &str,
    reason: &str,
    error: &str,
    original: Original<'_>,
) -> DeadLetter {
    let max_payload = js.client().server_info().max_payload;
    DeadLetter::within(reason, error, original, max_json(max_payload, dedup_id))
}

/// Publishes a dead letter; `dedup_id` (e.g. the command's stream sequence) keeps a
/// redelivered bad message from being dead-lettered twice.
pub async fn publish(
    js: &jetstream::Context,
    letter: &DeadLetter,
    dedup_id: &str,
) -> Result<(), Failure> {
    let body = serde_json::to_vec(letter).expect("a dead letter serialises");
    let message = Publish::build().payload(body.into()).message_id(dedup_id);
    crate::retry::publish(js, DeadLetter::subject_for(&letter.reason), message).await?;
    Ok(())
}

fn joined_headers(headers: Option<&async_nats::HeaderMap>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            let joined: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            map.insert(name.to_string(), joined.join(", "));
        }
    }
    map
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

fn json_len(letter: &DeadLetter) -> usize {
    serde_json::to_vec(letter)
        .expect("a dead letter serialises")
        .len()
}

fn json_string_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(s.len() * 6 + 2, |j| j.len())
}

/// At most `max` bytes of `s`, cut at a character boundary, marked with `…` when cut.
fn cut_at_char(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original<'a>(headers: Option<&'a async_nats::HeaderMap>, body: &'a [u8]) -> Original<'a> {
        Original {
            subject: "email_domains.commands.register_domain",
            headers,
            body,
        }
    }

    fn json(letter: &DeadLetter) -> Vec<u8> {
        serde_json::to_vec(letter).unwrap()
    }

    #[test]
    fn a_letter_that_fits_keeps_the_whole_body_and_says_it_is_whole() {
        let body = b"{\"command_id\": 42";
        let l = DeadLetter::within("unreadable_json", "not JSON", original(None, body), 10_000);
        assert_eq!(l.body().unwrap(), body);
        assert!(!l.body_truncated);
        assert_eq!(l.body_size, Some(body.len() as u64));
        assert_eq!(l.body_sha256.as_ref().unwrap().len(), 64);
    }

    #[test]
    fn the_digest_is_the_sha256_of_the_whole_body() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let l = DeadLetter::within("too_large", "big", original(None, b"abc"), 10);
        assert_eq!(
            l.body_sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(l.body_truncated, "10 bytes of JSON hold no body");
        assert_eq!(l.body_size, Some(3));
    }

    #[test]
    fn a_body_too_large_for_the_letter_is_cut_to_its_first_bytes_and_the_letter_fits() {
        let body: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
        for max in [1_048_576 - 40, 100_000, 4_099, 1_000] {
            let l = DeadLetter::within("too_large", "big", original(None, &body), max);
            let size = json(&l).len();
            assert!(size <= max, "{size} bytes of JSON for a room of {max}");
            // At most 3 bytes short of a base64 group, and `true` is one shorter than `false`.
            assert!(size + 4 >= max, "the room is used: {size} of {max}");
            let kept = l.body().unwrap();
            assert!(l.body_truncated);
            assert_eq!(kept[..], body[..kept.len()]);
            assert_eq!(l.body_size, Some(900_000));
        }
    }

    #[test]
    fn an_old_letter_without_the_new_fields_still_reads() {
        let old = r#"{"reason":"unreadable_json","error":"x","subject":"s","headers":{},
            "body_base64":"eyJjb21tYW5kX2lkIjogNDI=","received_at":"2026-11-26T10:01:00Z"}"#;
        let l: DeadLetter = serde_json::from_str(old).unwrap();
        assert!(!l.body_truncated && !l.headers_truncated);
        assert_eq!(l.body_size, None);
        assert_eq!(l.original_size(), Some(17));
    }

    #[test]
    fn the_new_fields_are_additions_beside_body_base64() {
        let l = DeadLetter::new("too_large", "big", "s", None, b"abc");
        let v: serde_json::Value = serde_json::from_slice(&json(&l)).unwrap();
        for field in [
            "reason",
            "error",
            "subject",
            "headers",
            "body_base64",
            "received_at",
            "body_size",
            "body_sha256",
            "body_truncated",
            "headers_truncated",
        ] {
            assert!(v.get(field).is_some(), "{field} missing: {v}");
        }
        assert_eq!(v["body_truncated"], false);
    }

    #[test]
    fn huge_headers_give_way_to_the_body_and_small_ones_stay() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "abc");
        h.insert("X-Padding", "p".repeat(60_000).as_str());
        let body = vec![b'x'; 50_000];
        let l = DeadLetter::within("too_large", "big", original(Some(&h), &body), 90_000);
        assert!(json(&l).len() <= 90_000);
        assert_eq!(
            l.headers.get("Nats-Msg-Id").map(String::as_str),
            Some("abc")
        );
        assert!(!l.headers.contains_key("X-Padding"));
        assert!(l.headers_truncated);
        assert!(l.body().unwrap().len() > 40_000, "the body got the room");
    }

    #[test]
    fn headers_that_fit_beside_the_whole_body_are_all_kept() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("X-Padding", "p".repeat(60_000).as_str());
        let l = DeadLetter::within("too_large", "big", original(Some(&h), b"small"), 1_000_000);
        assert!(!l.headers_truncated && !l.body_truncated);
        assert_eq!(l.headers["X-Padding"].len(), 60_000);
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        let error = "é".repeat(10_000);
        let l = DeadLetter::new("invalid_command", &error, "s", None, b"");
        assert!(l.error.len() <= MAX_ERROR_BYTES);
        assert!(l.error.ends_with('…'));
    }

    #[test]
    fn the_room_leaves_out_the_letters_own_header() {
        // "NATS/1.0\r\n" (10) + "Nats-Msg-Id: dl-7\r\n" (19) + "\r\n" (2).
        assert_eq!(max_json(1000, "dl-7"), 1000 - 31);
        let mut h = async_nats::HeaderMap::new();
        h.insert(DEDUP_HEADER, "dl-7");
        let wire = b"NATS/1.0\r\nNats-Msg-Id: dl-7\r\n\r\n".len();
        assert_eq!(max_json(1000, "dl-7"), 1000 - wire);
    }
}
