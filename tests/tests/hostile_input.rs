//! Hostile input: the command decoder and the name parser never panic on anything,
//! and a burst of hostile messages through a running stack kills no service, answers
//! every readable command id exactly once and dead-letters every unreadable message
//! with its original bytes.
//!
//! The stack test's generator is seeded: it prints `HOSTILE_SEED=<n>`, and setting that
//! variable replays the same burst.

use email_domain_events::command::{decode, MAX_COMMAND_BYTES};
use email_domain_events::outcome::Verdict;
use email_domain_events::{DomainName, ReservedDomains};
use futures::StreamExt;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use system_tests::{NatsOptions, Stack, StackOptions};
use uuid::Uuid;

/// docs/interface.md §2.3 dead-letter reasons, plus `invalid_command` for a readable command
/// with bad fields.
const REASONS: &[&str] = &[
    "unreadable_json",
    "not_an_object",
    "missing_command_id",
    "unknown_command",
    "too_large",
    "invalid_command",
];

const TOKENS: &[&str] = &[
    "register_domain",
    "dns_configured",
    "refresh_status",
    "delete_domain",
    "recheck",
    "provider_result",
    "fail_domain",
    "transfer_domain",
    "",
    "REGISTER_DOMAIN",
    "register_domain.extra",
];

/// Checks the decoder's total contract on one input.
fn check_decode(token: &str, body: &[u8]) -> Result<(), TestCaseError> {
    match decode(token, body) {
        Ok(c) => {
            prop_assert!(body.len() <= MAX_COMMAND_BYTES);
            prop_assert_eq!(c.command_type.as_str(), token);
            // What it decoded reads back the same.
            let again = decode(token, &serde_json::to_vec(&c.to_body()).unwrap());
            prop_assert_eq!(again.as_ref(), Ok(&c));
        }
        Err(f) => {
            prop_assert!(
                REASONS.contains(&f.dead_letter_reason),
                "unexpected reason {:?}",
                f.dead_letter_reason
            );
            prop_assert!(!f.error.is_empty(), "a dead letter says what is wrong");
            prop_assert_eq!(
                f.dead_letter_reason == "too_large",
                body.len() > MAX_COMMAND_BYTES
            );
            // Only invalid or unknown commands have a readable id (and get an outcome).
            if f.command_id.is_some() {
                prop_assert!(
                    matches!(f.dead_letter_reason, "invalid_command" | "unknown_command"),
                    "{} with an id",
                    f.dead_letter_reason
                );
            } else {
                prop_assert!(f.dead_letter_reason != "invalid_command");
            }
        }
    }
    Ok(())
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(TOKENS).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        Just(json!(Uuid::new_v4().to_string())),
        Just(json!("0b5e7c4e-8f0a-4b8e-9a43-5f1c2d3e4f50")),
        Just(json!("acme.test")),
        Just(json!("a\u{0}b.test")),
        "[a-zA-Z0-9.\\-_]{0,300}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "command_id",
    "tenant_id",
    "domain",
    "requested_by",
    "region",
    "domain_id",
    "reason",
    "provider_result",
    "correlation_id",
];

/// A JSON object whose known fields are each present or absent, with a valid value or
/// any other value; plus random extra fields.
fn command_like_object() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        2 => Just(None),
        2 => Just(Some(json!(Uuid::new_v4().to_string()))),
        1 => Just(Some(json!({"kind": "polled", "provider_status": "pending"}))),
        1 => Just(Some(json!({"kind": "created", "provider_id": "dev", "provider_domain_id": "x", "region": null, "records": []}))),
        3 => json_value().prop_map(Some),
    ];
    (
        proptest::collection::vec(field, FIELDS.len()),
        proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..3),
    )
        .prop_map(|(values, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in FIELDS.iter().zip(values) {
                if let Some(v) = v {
                    m.insert((*k).to_string(), v);
                }
            }
            Value::Object(m)
        })
}

/// Strings that look like domain names often enough for `Ok` to happen.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9\\-]{1,20}(\\.[a-zA-Z0-9\\-]{1,20}){0,4}\\.?",
        "[a-zA-Zäöüß\u{4e2d}\u{0430}-\u{044f}0-9\\-.]{1,40}\\.(com|test|de|co\\.uk|xn--p1ai)\\.?",
        "[a-z]{60,70}\\.[a-z]{60,70}\\.[a-z]{60,70}\\.[a-z]{60,70}\\.com",
        "\\PC{0,10}\\.\\PC{0,10}\\.com",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        t in token(),
        body in prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..512),
            1 => proptest::collection::vec(any::<u8>(), MAX_COMMAND_BYTES - 2..MAX_COMMAND_BYTES + 3),
        ],
    ) {
        check_decode(&t, &body)?;
    }

    #[test]
    fn decode_never_panics_on_arbitrary_json_objects(t in token(), v in command_like_object()) {
        check_decode(&t, &serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn decode_never_panics_on_arbitrary_json(t in token(), v in json_value()) {
        check_decode(&t, &serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn parsed_names_are_normal_and_parsing_is_idempotent(input in name_like()) {
        let reserved = ReservedDomains::parse("platform.example.com");
        if let Ok(name) = DomainName::parse(&input, &reserved) {
            let s = name.as_str();
            prop_assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
                "{:?} → {:?} is not lower-case ASCII", input, s
            );
            prop_assert!(!s.ends_with('.'), "{:?} → {:?} has a trailing dot", input, s);
            prop_assert!(s.len() <= 253, "{:?} → {} chars", input, s.len());
            let again = DomainName::parse(s, &reserved);
            prop_assert_eq!(again.as_ref().map(|n| n.as_str()), Ok(s), "{:?} not idempotent", input);
        }
    }
}

/// One hostile message: its subject's type token and body.
struct Hostile {
    token: String,
    body: Vec<u8>,
}

fn hostile(rng: &mut StdRng, tenant: Uuid) -> Hostile {
    const BAD_NAMES: &[&str] = &[
        "",
        ".",
        "..",
        "co.uk",
        "com",
        "localhost",
        "a..b.test",
        "-a.test",
        "a-.test",
        "under_score.test",
        "10.0.0.1",
        "[::1]",
        "x.invalid",
        "mail.local",
        "a\u{0}b.test",
        "\u{0}",
        "платформа",
        "platform.example.com",
        "sub.platform.example.com",
        "a b.test",
        "a/b.test",
        "%00.test",
    ];
    let valid_token = [
        "register_domain",
        "dns_configured",
        "refresh_status",
        "delete_domain",
    ][rng.random_range(0..4)]
    .to_string();
    let id = Uuid::new_v4().to_string();
    match rng.random_range(0..9) {
        // Malformed JSON: a valid command cut short, or random bytes.
        0 => {
            let full = serde_json::to_vec(
                &json!({"command_id": id, "tenant_id": tenant, "domain": "cut.test"}),
            )
            .unwrap();
            let cut = rng.random_range(0..full.len());
            Hostile {
                token: valid_token,
                body: full[..cut].to_vec(),
            }
        }
        1 => {
            let n = rng.random_range(0..300);
            Hostile {
                token: valid_token,
                body: (0..n).map(|_| rng.random()).collect(),
            }
        }
        // Oversized: a readable command padded past 64 KiB (not read, so no outcome).
        2 => {
            let pad = "x".repeat(MAX_COMMAND_BYTES + rng.random_range(1..10_000));
            Hostile {
                token: valid_token,
                body: serde_json::to_vec(
                    &json!({"command_id": id, "tenant_id": tenant, "domain": "big.test", "requested_by": pad}),
                )
                .unwrap(),
            }
        }
        // Unknown subjects, with and without a readable id.
        3 => {
            let token = [
                "transfer_domain",
                "x.y.z",
                "REGISTER_DOMAIN",
                "register_domain2",
                "\u{e9}t\u{e9}",
            ][rng.random_range(0..5)]
            .to_string();
            let body = if rng.random_bool(0.5) {
                json!({"command_id": id, "tenant_id": tenant, "domain": "u.test"})
            } else {
                json!({"tenant_id": tenant})
            };
            Hostile {
                token,
                body: serde_json::to_vec(&body).unwrap(),
            }
        }
        // Valid-looking commands with invalid names.
        4 | 5 => {
            let name = BAD_NAMES[rng.random_range(0..BAD_NAMES.len())];
            Hostile {
                token: valid_token,
                body: serde_json::to_vec(
                    &json!({"command_id": id, "tenant_id": tenant, "domain": name, "requested_by": "hostile"}),
                )
                .unwrap(),
            }
        }
        // NUL bytes: raw in the body, inside strings, in the id.
        6 => {
            let mut body = serde_json::to_vec(
                &json!({"command_id": id, "tenant_id": tenant, "domain": "nul.test"}),
            )
            .unwrap();
            let at = rng.random_range(0..body.len());
            body.insert(at, 0);
            Hostile {
                token: valid_token,
                body,
            }
        }
        7 => {
            let body = match rng.random_range(0..4) {
                0 => {
                    json!({"command_id": format!("{id}\u{0}"), "tenant_id": tenant, "domain": "n.test"})
                }
                1 => {
                    json!({"command_id": id, "tenant_id": format!("{tenant}\u{0}"), "domain": "n.test"})
                }
                2 => {
                    json!({"command_id": id, "tenant_id": tenant, "domain": "n.test", "region": "\u{0}\u{0}"})
                }
                _ => {
                    json!({"command_id": id, "tenant_id": tenant, "domain": "n.test", "requested_by": "\u{0}"})
                }
            };
            Hostile {
                token: valid_token,
                body: serde_json::to_vec(&body).unwrap(),
            }
        }
        // Wrong types, not-objects, missing ids.
        _ => {
            let body = match rng.random_range(0..7) {
                0 => json!([1, 2, 3]),
                1 => json!("a string"),
                2 => json!(null),
                3 => json!({"command_id": 42, "tenant_id": tenant, "domain": "t.test"}),
                4 => json!({"command_id": id, "tenant_id": 7, "domain": ["x"]}),
                5 => json!({"command_id": id, "tenant_id": tenant, "domain": {"a": 1}}),
                _ => {
                    json!({"command_id": id, "tenant_id": tenant, "domain": "t.test", "domain_id": "nope"})
                }
            };
            Hostile {
                token: valid_token,
                body: serde_json::to_vec(&body).unwrap(),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_hostile_messages_kills_nothing_and_loses_nothing() {
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("HOSTILE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let msgs: Vec<Hostile> = (0..200).map(|_| hostile(&mut rng, tenant)).collect();

    // Every outcome as it is published (core NATS sees each JetStream publish).
    let mut outcomes_sub = stack
        .client
        .subscribe("email_domains.outcomes.>")
        .await
        .unwrap();
    stack.client.flush().await.unwrap();

    let mut expect_outcome: HashMap<String, (usize, Option<&'static str>)> = HashMap::new();
    let mut expect_letter: BTreeMap<(String, Vec<u8>), usize> = BTreeMap::new();
    for (i, m) in msgs.iter().enumerate() {
        let subject = format!("email_domains.commands.{}", m.token);
        let local_token = subject.strip_prefix("email_domains.commands.").unwrap();
        match decode(local_token, &m.body) {
            Ok(c) => {
                // A readable command: a bad name must be rejected with the parser's code;
                // a good one (NUL bytes in other fields) may be accepted.
                let want =
                    DomainName::parse(&c.domain, &ReservedDomains::parse("platform.example.com"))
                        .err()
                        .map(|r| r.code());
                expect_outcome.insert(c.command_id.to_string(), (i, want));
            }
            Err(f) => {
                if let Some(id) = f.command_id {
                    expect_outcome.insert(id.to_string(), (i, Some("invalid_command")));
                }
                *expect_letter
                    .entry((subject.clone(), m.body.clone()))
                    .or_default() += 1;
            }
        }
        // No Nats-Msg-Id: nothing may be hidden by JetStream's duplicate window.
        stack
            .js
            .publish(subject, m.body.clone().into())
            .await
            .unwrap_or_else(|e| panic!("publish {i}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("ack {i}: {e}"));
    }

    // The stack still answers a valid command afterwards.
    let ok = stack
        .send("register_domain", tenant, "still-alive.test")
        .await;
    assert_eq!(ok.outcome, Verdict::Accepted, "{ok:?}");

    // Every readable id: exactly one outcome, with a code.
    let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while expect_outcome.keys().any(|k| !seen.contains_key(k)) && Instant::now() < deadline {
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(200), outcomes_sub.next()).await
        {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let id = m
                .subject
                .as_str()
                .trim_start_matches("email_domains.outcomes.")
                .to_string();
            seen.entry(id).or_default().push(v);
        }
    }
    // A little longer, to catch a second outcome.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(200), outcomes_sub.next()).await
        {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let id = m
                .subject
                .as_str()
                .trim_start_matches("email_domains.outcomes.")
                .to_string();
            seen.entry(id).or_default().push(v);
        }
    }
    let mut problems = Vec::new();
    for (id, (i, want)) in &expect_outcome {
        let m = &msgs[*i];
        let body = String::from_utf8_lossy(&m.body);
        match seen.get(id).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("#{i} {} {body}: no outcome", m.token)),
            Some([o]) if o["outcome"] == "accepted" && want.is_none() && o["reason"].is_null() => {}
            Some([o]) => {
                let code = o["reason"]["code"].as_str().unwrap_or("");
                if code.is_empty() || o["outcome"] != "rejected" {
                    problems.push(format!(
                        "#{i} {} {body}: outcome without a code: {o}",
                        m.token
                    ));
                } else if let Some(w) = want {
                    if code != *w {
                        problems.push(format!(
                            "#{i} {} {body}: code {code}, expected {w}",
                            m.token
                        ));
                    }
                }
            }
            Some(many) => problems.push(format!(
                "#{i} {} {body}: {} outcomes: {many:?}",
                m.token,
                many.len()
            )),
        }
    }
    // Outcomes only for ids we sent (and the final valid command).
    for id in seen.keys() {
        if !expect_outcome.contains_key(id)
            && ok.command_id.map(|c| c.to_string()).as_deref() != Some(id.as_str())
        {
            problems.push(format!("an outcome for an id nobody sent readably: {id}"));
        }
    }

    // Every unreadable message dead-lettered with its original subject and bytes.
    let stream = stack
        .js
        .get_stream("EMAIL_DOMAIN_DEAD_LETTERS")
        .await
        .unwrap();
    let want_letters: usize = expect_letter.values().sum();
    let mut letters: BTreeMap<(String, Vec<u8>), usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        letters.clear();
        let mut seq = 1;
        while let Ok(m) = stream
            .direct_get_next_for_subject("email_domains.dead_letters.>", Some(seq))
            .await
        {
            let l: runtime::dead_letters::DeadLetter = serde_json::from_slice(&m.payload).unwrap();
            assert!(REASONS.contains(&l.reason.as_str()), "reason {}", l.reason);
            assert!(!l.error.is_empty());
            *letters
                .entry((l.subject.clone(), l.body().expect("base64 body")))
                .or_default() += 1;
            seq = m.sequence + 1;
        }
        if letters.values().sum::<usize>() >= want_letters || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for ((subject, body), n) in &expect_letter {
        let got = letters
            .get(&(subject.clone(), body.clone()))
            .copied()
            .unwrap_or(0);
        if got != *n {
            problems.push(format!(
                "{subject} {:?}: {got} dead letters, expected {n}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ));
        }
    }
    for ((subject, body), n) in &letters {
        if !expect_letter.contains_key(&(subject.clone(), body.clone())) {
            problems.push(format!(
                "{n} unexpected dead letters on {subject}: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ));
        }
    }
    // The projections still move: the valid domain's row reaches awaiting_dns.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = stack.domains(tenant).await;
        if rows
            .iter()
            .any(|r| r["domain_name"] == "still-alive.test" && r["status"] == "awaiting_dns")
        {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "still-alive.test did not reach awaiting_dns in the email_domains projection within 30 s \
                 (rows of the tenant: {:?})",
                rows.iter().map(|r| format!("{} {}", r["domain_name"], r["status"])).collect::<Vec<_>>()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        problems.is_empty(),
        "HOSTILE_SEED={seed}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------
// Oversized messages: each is dead-lettered exactly once, cut to what a NATS message
// can carry, and the handler is done with it (nothing retried forever).

const REGISTER_SUBJECT: &str = "email_domains.commands.register_domain";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `register_domain` body of exactly `size` bytes: a readable command padded in
/// `requested_by`.
fn padded_register(command_id: Uuid, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"command_id":"{command_id}","tenant_id":"{}","domain":"big.test","requested_by":""#,
        Uuid::new_v4()
    );
    let tail = "\"}";
    let pad = size
        .checked_sub(head.len() + tail.len())
        .expect("size leaves room for the command");
    let body = format!("{head}{}{tail}", "x".repeat(pad)).into_bytes();
    assert_eq!(body.len(), size);
    body
}

/// Bytes a header block takes on the wire (`NATS/1.0\r\n`, `name: value\r\n` each, `\r\n`).
fn header_wire_len(headers: &async_nats::HeaderMap) -> usize {
    let mut len = "NATS/1.0\r\n\r\n".len();
    for (name, values) in headers.iter() {
        for v in values {
            len += name.to_string().len() + 2 + v.as_str().len() + 2;
        }
    }
    len
}

/// What the handler made of one message.
struct Handled {
    /// Each dead letter, with its size as stored.
    letters: Vec<(Value, usize)>,
    outcomes: Vec<Value>,
    max_payload: usize,
}

/// Publishes one message on `register_domain` and waits, with a deadline, until the
/// handler has acknowledged it (the work-queue stream is empty again): a handler that
/// retries forever never does. Then collects every dead letter and every outcome
/// published for `command_id`.
async fn publish_and_wait_until_handled(
    stack: &Stack,
    headers: Option<async_nats::HeaderMap>,
    body: Vec<u8>,
    command_id: Uuid,
) -> Handled {
    let max_payload = stack.client.server_info().max_payload;
    let mut outcomes_sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{command_id}"))
        .await
        .unwrap();
    stack.client.flush().await.unwrap();
    let ack = match headers {
        Some(h) => stack
            .js
            .publish_with_headers(REGISTER_SUBJECT, h, body.into())
            .await
            .expect("the server takes the message"),
        None => stack
            .js
            .publish(REGISTER_SUBJECT, body.into())
            .await
            .expect("the server takes the message"),
    };
    ack.await.expect("stored on the commands stream");

    let mut commands = stack.js.get_stream("EMAIL_DOMAIN_COMMANDS").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while commands.info().await.unwrap().state.messages > 0 {
        assert!(
            Instant::now() < deadline,
            "the handler did not finish with the message within 30 s (retrying forever?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Acknowledged after its outcome was stored: a round trip to the server now
    // brings every outcome it delivered before.
    stack.client.flush().await.unwrap();
    let mut outcomes = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(100), outcomes_sub.next()).await
    {
        outcomes.push(serde_json::from_slice(&m.payload).unwrap());
    }

    let letters_stream = stack
        .js
        .get_stream("EMAIL_DOMAIN_DEAD_LETTERS")
        .await
        .unwrap();
    let mut letters = Vec::new();
    let mut seq = 1;
    while let Ok(m) = letters_stream
        .direct_get_next_for_subject("email_domains.dead_letters.>", Some(seq))
        .await
    {
        assert!(
            m.payload.len() <= max_payload,
            "a stored dead letter fits a message"
        );
        letters.push((serde_json::from_slice(&m.payload).unwrap(), m.payload.len()));
        seq = m.sequence + 1;
    }
    Handled {
        letters,
        outcomes,
        max_payload,
    }
}

/// The one dead letter of `body`: its reason, size, digest, truncation flag, and a
/// kept body that is the original's first bytes (all of them unless truncated).
fn assert_one_letter(handled: &Handled, body: &[u8], reason: &str, truncated: bool) -> Value {
    assert_eq!(
        handled.letters.len(),
        1,
        "exactly one dead letter: {:?}",
        handled
            .letters
            .iter()
            .map(|(l, _)| (&l["reason"], &l["body_size"]))
            .collect::<Vec<_>>()
    );
    let (l, stored_size) = handled.letters[0].clone();
    assert_eq!(l["reason"], reason, "{}", l["error"]);
    assert_eq!(l["subject"], REGISTER_SUBJECT);
    assert_eq!(l["body_size"], json!(body.len()), "the original size");
    assert_eq!(
        l["body_sha256"],
        json!(sha256_hex(body)),
        "the whole body's digest"
    );
    assert_eq!(l["body_truncated"], json!(truncated));
    use base64::Engine;
    let kept = base64::engine::general_purpose::STANDARD
        .decode(l["body_base64"].as_str().expect("body_base64 stays"))
        .expect("base64");
    if truncated {
        assert!(kept.len() < body.len());
        // Cut against the server's real limit: the letter fills the message.
        assert!(
            stored_size > handled.max_payload * 95 / 100,
            "a letter of {stored_size} bytes, {} of them body, where {} fit",
            kept.len(),
            handled.max_payload
        );
        assert_eq!(
            kept[..],
            body[..kept.len()],
            "the kept bytes are the first ones"
        );
    } else {
        assert_eq!(kept, body, "the whole body kept");
    }
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_just_over_64_kib_is_dead_lettered_once_whole_with_its_size_and_digest() {
    let stack = Stack::start().await;
    let id = Uuid::new_v4();
    let body = padded_register(id, MAX_COMMAND_BYTES + 1);
    let handled = publish_and_wait_until_handled(&stack, None, body.clone(), id).await;
    assert_one_letter(&handled, &body, "too_large", false);
    assert!(
        handled.outcomes.is_empty(),
        "an unread body has no readable id"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_900_kb_body_is_dead_lettered_once_cut_to_fit_with_its_size_and_digest() {
    let stack = Stack::start().await;
    let id = Uuid::new_v4();
    let body = padded_register(id, 900_000);
    let handled = publish_and_wait_until_handled(&stack, None, body.clone(), id).await;
    assert_one_letter(&handled, &body, "too_large", true);
    assert!(handled.outcomes.is_empty());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_body_the_server_accepts_is_dead_lettered_once_cut_to_fit() {
    let stack = Stack::start().await;
    let id = Uuid::new_v4();
    // Published without headers, so the whole of max_payload is body.
    let largest = stack.client.server_info().max_payload;
    let body = padded_register(id, largest);
    let handled = publish_and_wait_until_handled(&stack, None, body.clone(), id).await;
    assert_one_letter(&handled, &body, "too_large", true);
    assert!(handled.outcomes.is_empty());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_server_with_a_small_max_payload_a_readable_command_is_dead_lettered_cut_to_fit_with_one_outcome(
) {
    // 96 KiB: a 60 KB command and its 30 KB of headers fit, their dead letter (the
    // body a third larger in base64) does not.
    let stack = Stack::start_with(StackOptions {
        nats: NatsOptions {
            max_payload: Some(96 * 1024),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    assert_eq!(stack.client.server_info().max_payload, 96 * 1024);
    let id = Uuid::new_v4();
    let head = format!(
        r#"{{"command_id":"{id}","tenant_id":"not-a-uuid","domain":"headers.test","pad":""#
    );
    let body = format!("{head}{}\"}}", "x".repeat(60_000 - head.len() - 2)).into_bytes();
    assert_eq!(body.len(), 60_000);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Small", "kept");
    headers.insert("X-Padding", "p".repeat(30_000).as_str());
    assert!(header_wire_len(&headers) + body.len() <= 96 * 1024);
    let handled = publish_and_wait_until_handled(&stack, Some(headers), body.clone(), id).await;
    let letter = assert_one_letter(&handled, &body, "invalid_command", true);
    assert_eq!(letter["headers"]["X-Small"], "kept");
    assert_eq!(
        letter["headers"]["X-Padding"].as_str().map(str::len),
        Some(30_000)
    );
    assert_eq!(letter["headers_truncated"], json!(false));
    assert_eq!(handled.outcomes.len(), 1, "exactly one outcome");
    assert_eq!(handled.outcomes[0]["outcome"], "rejected");
    assert_eq!(handled.outcomes[0]["reason"]["code"], "invalid_command");
    stack.shutdown().await;
}
