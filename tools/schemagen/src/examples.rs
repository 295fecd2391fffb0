//! Example messages of every kind, serialised from real values of the service's
//! types (fixed ids and times, so the files are stable). Each is checked into
//! `schemas/examples/<schema>/<name>.json` and validated against `json/<schema>.schema.json`.

use crate::wire;
use chrono::{DateTime, TimeZone, Utc};
use email_domain_events::analytics;
use email_domain_events::command::{Command, CommandType, ProviderResult};
use email_domain_events::decide::{Rejection, RejectionCode};
use email_domain_events::event::{CheckTrigger, Event, EventData, SCHEMA_VERSION};
use email_domain_events::ids::{CommandId, DomainId, EventId, TenantId};
use email_domain_events::outcome::Outcome;
use email_domain_events::records::{Diagnosis, DiagnosisCode, DnsRecord, DnsStatus};
use email_domain_events::state::Status;
use email_domain_events::tenant::TenantSettings;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0b5e7c4e_8f0a_4b8e_9a43_000000000000 | n)
}

fn tenant() -> TenantId {
    TenantId(Uuid::from_u128(0x1c9d6e2a_0000_4000_8000_000000000001))
}

fn command_id() -> CommandId {
    CommandId(id(1))
}

fn domain_id() -> DomainId {
    DomainId::for_registration(command_id())
}

fn at(min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 10, min, 0)
        .single()
        .expect("a time")
}

fn records(status: DnsStatus) -> Vec<DnsRecord> {
    let mismatch = status == DnsStatus::Mismatch;
    vec![
        DnsRecord {
            purpose: "dkim".into(),
            record_type: "TXT".into(),
            name: "resend._domainkey.acme.example".into(),
            value: "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC".into(),
            priority: None,
            required: true,
            dns_status: status,
            observed: if mismatch { vec!["p=OLDKEY".into()] } else { vec![] },
            diagnosis: mismatch.then(|| Diagnosis {
                code: DiagnosisCode::ValueMismatch,
                message: "resend._domainkey.acme.example holds another DKIM key; replace it with the value shown".into(),
                record: "resend._domainkey.acme.example".into(),
                host: "resend._domainkey".into(),
                observed: vec!["p=OLDKEY".into()],
            }),
        },
        DnsRecord {
            purpose: "return_path".into(),
            record_type: "MX".into(),
            name: "send.acme.example".into(),
            value: "feedback-smtp.us-east-1.amazonses.com".into(),
            priority: Some(10),
            required: true,
            dns_status: if status == DnsStatus::Pending { DnsStatus::Pending } else { DnsStatus::Found },
            observed: vec![],
            diagnosis: None,
        },
        DnsRecord {
            purpose: "spf".into(),
            record_type: "TXT".into(),
            name: "send.acme.example".into(),
            value: "v=spf1 include:amazonses.com ~all".into(),
            priority: None,
            required: true,
            dns_status: if status == DnsStatus::Pending { DnsStatus::Pending } else { DnsStatus::Found },
            observed: vec![],
            diagnosis: None,
        },
        DnsRecord {
            purpose: "dmarc".into(),
            record_type: "TXT".into(),
            name: "_dmarc.acme.example".into(),
            value: "v=DMARC1; p=none;".into(),
            priority: None,
            required: false,
            dns_status: if status == DnsStatus::Pending { DnsStatus::Pending } else { DnsStatus::Missing },
            observed: vec![],
            diagnosis: None,
        },
    ]
}

/// One real event of every type, in the order a domain's life could write them.
pub fn events() -> Vec<Event> {
    let datas = vec![
        EventData::DomainRegistered {
            region: Some("us-east-1".into()),
            requested_by: Some("user:42".into()),
            deadline_at: at(0) + chrono::Duration::days(7),
        },
        EventData::CheckRequested {
            trigger: CheckTrigger::DnsConfigured,
        },
        EventData::DomainProvisioned {
            provider_id: "resend".into(),
            provider_domain_id: "4dd369bc-aa82-4ff3-97de-514ae3000ee0".into(),
            region: Some("us-east-1".into()),
            records: records(DnsStatus::Pending),
            next_check_at: Some(at(5)),
            cleanup_required: false,
        },
        EventData::DnsChecked {
            trigger: CheckTrigger::Scheduled,
            records: records(DnsStatus::Mismatch),
            all_required_found: false,
            request_verification: false,
            poll_provider: false,
            next_check_at: Some(at(15)),
            new_deadline_at: None,
            attempt: 1,
            drift_detected: false,
            drift_resolved: false,
            propagation: Vec::new(),
            provider_domain_id: Some("4dd369bc-aa82-4ff3-97de-514ae3000ee0".into()),
        },
        EventData::ProviderPolled {
            provider_status: "verified".into(),
            verified: true,
            activates: true,
            provider_failed: false,
            next_check_at: Some(at(59)),
            reason: None,
            failed_records: Vec::new(),
        },
        EventData::VerificationFailed {
            reason: "the DKIM record was never found".into(),
            records: records(DnsStatus::Found),
            by_operator: true,
        },
        EventData::WindowReopened {
            deadline_at: at(30) + chrono::Duration::days(7),
        },
        EventData::ProvisioningFailed {
            reason: "the provider refused the domain: it is on a block list".into(),
        },
        EventData::DomainDeleted {
            requested_by: None,
            cleanup_required: true,
            provider_domain_id: Some("4dd369bc-aa82-4ff3-97de-514ae3000ee0".into()),
        },
        EventData::DomainReleased {
            to_tenant: TenantId(id(99)),
            cleanup_required: false,
            provider_domain_id: None,
        },
        EventData::ProviderCleanedUp {},
        EventData::PreflightChecked {
            warnings: vec![email_domain_events::preflight::Warning {
                code: "existing_spf".into(),
                message: "`send.acme.example` already has an SPF record (`v=spf1 -all`)".into(),
            }],
        },
        EventData::ProviderDomainVanished {
            provider_domain_id: "4dd369bc-aa82-4ff3-97de-514ae3000ee0".into(),
            region: Some("us-east-1".into()),
            reason: "The email provider no longer has this domain, so we are setting it up again."
                .into(),
            deadline_at: at(12) + chrono::Duration::days(7),
        },
    ];
    datas
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let version = i as u64 + 1;
            let causation = CommandId(id(100 + i as u128));
            Event {
                event_id: EventId::for_command(causation, domain_id(), version),
                tenant_id: tenant(),
                domain_id: domain_id(),
                domain: "acme.example".into(),
                version,
                occurred_at: at(i as u32),
                causation_id: causation,
                correlation_id: command_id().0,
                schema_version: SCHEMA_VERSION,
                data,
            }
        })
        .collect()
}

fn command(command_type: CommandType) -> Command {
    let internal = matches!(
        command_type,
        CommandType::Recheck | CommandType::ProviderResult | CommandType::Preflight
    );
    Command {
        command_type,
        command_id: command_id(),
        tenant_id: tenant(),
        domain: if command_type == CommandType::RegisterDomain {
            "Acme.Example.".into()
        } else {
            "acme.example".into()
        },
        requested_by: (!internal).then(|| "user:42".to_string()),
        region: (command_type == CommandType::RegisterDomain).then(|| "us-east-1".to_string()),
        domain_id: (internal || command_type == CommandType::FailDomain).then(domain_id),
        reason: (command_type == CommandType::FailDomain)
            .then(|| "the owner asked us to stop".to_string()),
        provider_result: (command_type == CommandType::ProviderResult).then(|| {
            ProviderResult::Created {
                provider_id: "resend".into(),
                provider_domain_id: "4dd369bc-aa82-4ff3-97de-514ae3000ee0".into(),
                region: Some("us-east-1".into()),
                records: records(DnsStatus::Pending),
            }
        }),
        correlation_id: None,
    }
}

fn to<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialisable")
}

/// Every example: (kind = schema stem, name, message).
pub fn all() -> Vec<(String, String, Value)> {
    let mut out: Vec<(String, String, Value)> = Vec::new();
    let mut put =
        |kind: &str, name: &str, v: Value| out.push((kind.to_string(), name.to_string(), v));

    // Commands: the bodies `Command::to_body` writes (what `decode` reads back).
    for ty in [
        CommandType::RegisterDomain,
        CommandType::DnsConfigured,
        CommandType::RefreshStatus,
        CommandType::DeleteDomain,
        CommandType::FailDomain,
        CommandType::Recheck,
        CommandType::ProviderResult,
        CommandType::Preflight,
    ] {
        put(
            &format!("command.{}", ty.as_str()),
            "basic",
            command(ty).to_body(),
        );
    }
    let minimal =
        json!({"command_id": command_id(), "tenant_id": tenant(), "domain": "acme.example"});
    put("command.register_domain", "minimal", minimal.clone());
    let mut bad_name = minimal.clone();
    bad_name["domain"] = json!("not a domain!");
    put("command.register_domain", "unregistrable_name", bad_name);
    let mut idn = minimal.clone();
    idn["domain"] = json!("bücher.example");
    idn["future_field"] = json!({"anything": true});
    put("command.register_domain", "idn_and_unknown_field", idn);
    let mut provider_rejected = command(CommandType::ProviderResult);
    provider_rejected.provider_result = Some(ProviderResult::CreateRejected {
        message: "domain is on a block list".into(),
    });
    put(
        "command.provider_result",
        "create_rejected",
        provider_rejected.to_body(),
    );
    provider_rejected.provider_result = Some(ProviderResult::Polled {
        provider_status: "pending".into(),
        provider_domain_id: None,
        failed_records: Vec::new(),
    });
    put(
        "command.provider_result",
        "polled",
        provider_rejected.to_body(),
    );
    provider_rejected.provider_result = Some(ProviderResult::Polled {
        provider_status: "partially_failed".into(),
        provider_domain_id: Some("4dd369bc-aa82-4ff3-97de-514ae3000ee0".into()),
        failed_records: vec![email_domain_events::FailedRecord {
            record_type: "TXT".into(),
            name: "resend._domainkey.acme.example".into(),
        }],
    });
    put(
        "command.provider_result",
        "polled_partially_failed",
        provider_rejected.to_body(),
    );
    provider_rejected.provider_result = Some(ProviderResult::CleanedUp);
    put(
        "command.provider_result",
        "cleaned_up",
        provider_rejected.to_body(),
    );

    // Outcomes.
    put(
        "outcome",
        "accepted",
        to(&Outcome::accepted(
            command_id(),
            tenant().to_string(),
            "acme.example".into(),
            domain_id(),
        )),
    );
    put(
        "outcome",
        "rejected_domain_taken",
        to(&Outcome::rejected(
            command_id(),
            Some(tenant().to_string()),
            Some("acme.example".into()),
            None,
            &Rejection::new(
                RejectionCode::DomainTaken,
                "another tenant holds acme.example",
            ),
        )),
    );
    put(
        "outcome",
        "rejected_unreadable_fields",
        to(&Outcome::rejected(
            command_id(),
            None,
            None,
            None,
            &Rejection::new(
                RejectionCode::InvalidCommand,
                "`tenant_id` is missing or not a UUID",
            ),
        )),
    );

    // Events, their data, and the analytics each one produces.
    for e in events() {
        let ty = e.data.type_name();
        let v = serde_json::from_slice::<Value>(&e.to_json()).expect("an event is JSON");
        put(&format!("event-data.{ty}"), "basic", v["data"].clone());
        put("event", ty, v);
        for name in analytics::names(&e) {
            put(
                "analytics.cloud_event",
                name,
                analytics::cloud_event(&e, name),
            );
        }
    }

    // A dead letter, as the command handler writes it for an unreadable body.
    let body = b"{\"command_id\": 42";
    put(
        "dead_letter",
        "unreadable_json",
        to(&wire::DeadLetter {
            reason: "unreadable_json".into(),
            error: "the body is not JSON: EOF while parsing an object at line 1 column 17".into(),
            subject: "email_domains.commands.register_domain".into(),
            headers: [("Nats-Msg-Id".to_string(), "abc".to_string())]
                .into_iter()
                .collect(),
            body_base64: base64(body),
            body_size: Some(body.len() as u64),
            body_sha256: Some(sha256_hex(body)),
            body_truncated: false,
            headers_truncated: false,
            received_at: at(1),
        }),
    );
    // A body too large to be read, and too large for the letter: its first bytes kept.
    let big = format!(
        r#"{{"command_id":"{}","tenant_id":"{}","domain":"big.test","requested_by":"{}"}}"#,
        command_id().0,
        tenant().0,
        "x".repeat(899_880)
    );
    put(
        "dead_letter",
        "too_large_truncated",
        to(&wire::DeadLetter {
            reason: "too_large".into(),
            error: format!(
                "the body is {} bytes; commands are at most 65536 bytes",
                big.len()
            ),
            subject: "email_domains.commands.register_domain".into(),
            headers: BTreeMap::new(),
            body_base64: base64(&big.as_bytes()[..99]),
            body_size: Some(big.len() as u64),
            body_sha256: Some(sha256_hex(big.as_bytes())),
            body_truncated: true,
            headers_truncated: false,
            received_at: at(2),
        }),
    );

    // Queries.
    put(
        "query.sender.request",
        "basic",
        to(&wire::QueryRequest {
            tenant_id: tenant().to_string(),
        }),
    );
    put(
        "query.domains.request",
        "basic",
        to(&wire::QueryRequest {
            tenant_id: tenant().to_string(),
        }),
    );
    let managed = TenantSettings {
        default_from_domain: Some("acme.example".into()),
        ..Default::default()
    };
    put(
        "query.sender.reply",
        "managed",
        to(&managed.sender("notifications", "notifications@platform.invalid")),
    );
    put(
        "query.sender.reply",
        "platform",
        to(&TenantSettings::default().sender("notifications", "notifications@platform.invalid")),
    );
    let error = json!({"error": {"code": "invalid_request", "message": "`tenant_id` is missing or not a UUID"}});
    put("query.sender.reply", "error", error.clone());
    let row = wire::EmailDomainRow {
        id: domain_id().0,
        tenant: tenant().0,
        domain_name: "acme.example".into(),
        status: Status::Verified,
        provider_id: Some("resend".into()),
        provider_domain_id: Some("4dd369bc-aa82-4ff3-97de-514ae3000ee0".into()),
        dns_records: records(DnsStatus::Found),
        failure_reason: None,
        metadata: Default::default(),
        verified_at: Some(at(4)),
        dns_last_checked_at: Some(at(3)),
        next_check_at: Some(at(59)),
        created_at: Some(at(0)),
        updated_at: Some(at(4)),
        version: Some(5),
    };
    put("email_domain_row", "verified", to(&row));
    put(
        "query.domains.reply",
        "one_domain",
        to(&wire::DomainsReply::Domains { domains: vec![row] }),
    );
    put(
        "query.domains.reply",
        "none",
        to(&wire::DomainsReply::Domains { domains: vec![] }),
    );
    put("query.domains.reply", "error", error);
    for (i, r) in records(DnsStatus::Mismatch).iter().enumerate() {
        put("dns_record", &format!("{i}_{}", r.purpose), to(r));
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
