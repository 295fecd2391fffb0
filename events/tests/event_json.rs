//! The event log's JSON (docs/interface.md §2.4): the envelope's keys, round trips, and old
//! events staying readable.

mod common;

use common::*;
use email_domain_events::event::CheckTrigger;
use email_domain_events::{CommandType, DnsStatus, Event, EventData};
use std::collections::BTreeSet;

const NAME: &str = "acme.test";

const ENVELOPE: [&str; 11] = [
    "event_id",
    "type",
    "tenant_id",
    "domain_id",
    "domain",
    "version",
    "occurred_at",
    "causation_id",
    "correlation_id",
    "data",
    "schema_version",
];

/// One event of (almost) every type, as the decider writes them.
fn every_event() -> Vec<Event> {
    let mut out = Vec::new();
    let d = in_created(NAME)
        .when_command(CommandType::DnsConfigured)
        .then(); // check_requested
    let d = d.when_provider(created(NAME)).then(); // domain_provisioned
    let d = d
        .when_command(CommandType::RefreshStatus)
        .dns(d.dns_all_found())
        .then(); // dns_checked
    let d = d.when_provider(polled("verified")).then(); // provider_polled
    let d = d.when_command(CommandType::FailDomain).then(); // verification_failed
    let d = d.when_command(CommandType::DeleteDomain).then(); // domain_deleted
    out.extend(d.events);
    let f = in_failed_unprovisioned("b.test")
        .when_command(CommandType::RefreshStatus)
        .then(); // provisioning_failed, window_reopened
    out.extend(f.events);
    let mut r = in_failed("c.test");
    r.record(
        at(30 * DAY),
        fresh_command_id(),
        EventData::DomainReleased {
            to_tenant: tenant_b(),
            cleanup_required: true,
            provider_domain_id: Some("rs-c.test".into()),
        },
    );
    out.extend(r.events);
    out.extend(added_later().into_iter().map(|(_, e)| e));
    out
}

/// Events of kinds (or with fields) that came after the fixture was first frozen:
/// each is a line appended to it, with fixed ids so the line never changes.
fn added_later() -> Vec<(&'static str, Event)> {
    use email_domain_events::{CommandId, DomainId, EventId, FailedRecord, ProviderStatus};
    let domain = DomainId(uuid::Uuid::from_u128(
        0x5eed_0000_0000_0000_0000_0000_0000_0100,
    ));
    let event = |version: u64, data: EventData| {
        let causation = CommandId(uuid::Uuid::from_u128(
            0x5eed_0000_0000_0000_0000_0000_0000_0100 + u128::from(version),
        ));
        Event {
            event_id: EventId::for_command(causation, domain, version),
            tenant_id: tenant_a(),
            domain_id: domain,
            domain: "d.test".into(),
            version,
            occurred_at: at(2 * DAY + version as i64),
            causation_id: causation,
            correlation_id: causation.0,
            schema_version: 1,
            data,
        }
    };
    vec![
        (
            "provider_polled with the records the provider failed",
            event(
                5,
                EventData::ProviderPolled {
                    provider_status: ProviderStatus::PartiallyFailed,
                    verified: false,
                    activates: false,
                    provider_failed: true,
                    next_check_at: Some(at(2 * DAY + HOUR)),
                    reason: Some(
                        "The email provider could not verify this record: TXT record at resend._domainkey.d.test."
                            .into(),
                    ),
                    failed_records: vec![FailedRecord {
                        record_type: "TXT".into(),
                        name: "resend._domainkey.d.test".into(),
                    }],
                },
            ),
        ),
        (
            "provider_domain_vanished",
            event(
                6,
                EventData::ProviderDomainVanished {
                    provider_domain_id: "rs-d.test".into(),
                    region: Some("us-east-1".into()),
                    reason: "The email provider no longer has this domain, so we are setting it up again.".into(),
                    deadline_at: at(9 * DAY),
                },
            ),
        ),
    ]
}

fn keys(e: &Event) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
    v.as_object().expect("an object").keys().cloned().collect()
}

#[test]
fn every_event_type_but_provider_cleaned_up_is_covered_by_the_fixture() {
    let types: BTreeSet<&str> = every_event().iter().map(|e| e.data.type_name()).collect();
    assert_eq!(types.len(), 11, "{types:?}");
}

#[test]
fn the_serialized_envelope_has_exactly_the_contracts_keys() {
    let expected: BTreeSet<String> = ENVELOPE.iter().map(|s| s.to_string()).collect();
    for e in every_event() {
        assert_eq!(keys(&e), expected, "{}", e.data.type_name());
    }
}

#[test]
fn a_provider_cleaned_up_event_also_has_a_data_key() {
    let mut d = in_deactivated(NAME);
    d.record(at(DAY), fresh_command_id(), EventData::ProviderCleanedUp {});
    let expected: BTreeSet<String> = ENVELOPE.iter().map(|s| s.to_string()).collect();
    assert_eq!(keys(d.last()), expected);
}

#[test]
fn a_provider_cleaned_up_event_round_trips() {
    let mut d = in_deactivated(NAME);
    d.record(at(DAY), fresh_command_id(), EventData::ProviderCleanedUp {});
    assert_eq!(Event::from_json(&d.last().to_json()).unwrap(), *d.last());
}

#[test]
fn the_envelope_values_are_in_the_contracts_forms() {
    for e in every_event() {
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["type"], e.data.type_name());
        assert_eq!(v["event_id"], e.event_id.to_string());
        assert_eq!(v["tenant_id"], e.tenant_id.to_string());
        assert_eq!(v["domain_id"], e.domain_id.to_string());
        assert_eq!(v["causation_id"], e.causation_id.to_string());
        assert_eq!(v["version"], e.version);
        assert_eq!(v["schema_version"], 1);
        assert!(v["data"].is_object(), "{}", e.data.type_name());
        let occurred = v["occurred_at"].as_str().unwrap();
        assert!(occurred.ends_with('Z'), "RFC 3339 in UTC: {occurred}");
        for id in [
            "event_id",
            "tenant_id",
            "domain_id",
            "causation_id",
            "correlation_id",
        ] {
            let s = v[id].as_str().unwrap();
            assert_eq!(s, s.to_ascii_lowercase());
            assert_eq!(s.len(), 36, "hyphenated: {s}");
        }
    }
}

#[test]
fn every_event_reads_back_as_it_was_written() {
    for e in every_event() {
        assert_eq!(
            Event::from_json(&e.to_json()).unwrap(),
            e,
            "{}",
            e.data.type_name()
        );
    }
}

#[test]
fn an_event_without_a_schema_version_reads_as_version_one() {
    let e = in_awaiting_dns(NAME).last().clone();
    let mut v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
    v.as_object_mut().unwrap().remove("schema_version");
    let read = Event::from_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(read.schema_version, 1);
    assert_eq!(read, e);
}

#[test]
fn a_dns_check_written_before_drift_monitoring_reads_without_drift() {
    let d = in_awaiting_dns(NAME);
    let missing = found_except(&d.state().records, "dkim", DnsStatus::Missing, &["p=OLD"]);
    let d = d
        .when_command(CommandType::DnsConfigured)
        .dns(missing)
        .then();
    let mut v: serde_json::Value = serde_json::from_slice(&d.last().to_json()).unwrap();
    let data = v["data"].as_object_mut().unwrap();
    data.remove("drift_detected");
    data.remove("drift_resolved");
    data.remove("provider_domain_id");
    let read = Event::from_json(v.to_string().as_bytes()).unwrap();
    match read.data {
        EventData::DnsChecked {
            drift_detected,
            drift_resolved,
            provider_domain_id,
            records,
            ..
        } => {
            assert!(!drift_detected && !drift_resolved);
            assert_eq!(provider_domain_id, None);
            assert_eq!(records, d.state().records);
        }
        other => panic!("expected dns_checked, got {other:?}"),
    }
}

#[test]
fn a_deletion_written_before_provider_ids_were_recorded_still_reads() {
    let d = in_awaiting_dns(NAME)
        .when_command(CommandType::DeleteDomain)
        .then();
    let mut v: serde_json::Value = serde_json::from_slice(&d.last().to_json()).unwrap();
    v["data"]
        .as_object_mut()
        .unwrap()
        .remove("provider_domain_id");
    let read = Event::from_json(v.to_string().as_bytes()).unwrap();
    assert!(matches!(
        read.data,
        EventData::DomainDeleted {
            cleanup_required: true,
            provider_domain_id: None,
            ..
        }
    ));
}

#[test]
fn dns_records_in_events_use_the_contracts_record_form() {
    let d = in_awaiting_dns(NAME);
    let missing = found_except(&d.state().records, "dkim", DnsStatus::Mismatch, &["p=OLD"]);
    let d = d
        .when_command(CommandType::DnsConfigured)
        .dns(missing)
        .then();
    let v: serde_json::Value = serde_json::from_slice(&d.last().to_json()).unwrap();
    assert_eq!(v["data"]["trigger"], "dns_configured");
    let dkim = v["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "dkim")
        .unwrap();
    let keys: BTreeSet<&str> = dkim
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "purpose",
            "type",
            "name",
            "value",
            "priority",
            "required",
            "dns_status",
            "observed",
            "diagnosis"
        ])
    );
    assert_eq!(dkim["type"], "TXT");
    assert_eq!(dkim["dns_status"], "mismatch");
    assert_eq!(dkim["observed"], serde_json::json!(["p=OLD"]));
    assert_eq!(dkim["required"], true);
}

#[test]
fn the_event_subject_names_tenant_and_domain() {
    let d = in_created(NAME);
    assert_eq!(
        d.last().subject(),
        format!("email_domains.events.{}.{}", d.tenant, d.id)
    );
}

#[test]
fn a_check_requested_event_keeps_its_trigger() {
    let d = in_created(NAME)
        .when_command(CommandType::RefreshStatus)
        .then();
    let v: serde_json::Value = serde_json::from_slice(&d.last().to_json()).unwrap();
    assert_eq!(v["data"], serde_json::json!({"trigger": "refresh_status"}));
    assert_eq!(
        d.last().data,
        EventData::CheckRequested {
            trigger: CheckTrigger::RefreshStatus
        }
    );
}

/// The frozen log: events of every type in the format written on 2026-11-26
/// (schema version 1), kept under `tests/fixtures/`. Stored events are never rewritten,
/// so every later build must read this file as it is. `UPDATE_EVENT_FIXTURE=1` wrote it
/// once; `APPEND_EVENT_FIXTURE=1` appends the lines of [`added_later`] that are missing
/// (a new event type or field is a new line; a line that is there never changes).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/events-v1.jsonl"
);

#[test]
fn the_frozen_event_log_of_every_type_is_still_readable() {
    if std::env::var("UPDATE_EVENT_FIXTURE").is_ok() {
        let mut events = every_event();
        let mut cleaned = events.last().unwrap().clone();
        cleaned.version += 1;
        cleaned.data = EventData::ProviderCleanedUp {};
        events.push(cleaned);
        let mut preflight = events.last().unwrap().clone();
        preflight.version += 1;
        preflight.data = EventData::PreflightChecked {
            warnings: vec![email_domain_events::preflight::Warning {
                code: "existing_spf".into(),
                message: "`send.acme.test` already has an SPF record".into(),
            }],
        };
        events.push(preflight);
        let lines: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8(e.to_json()).unwrap())
            .collect();
        std::fs::write(FIXTURE, lines.join("\n") + "\n").unwrap();
    }
    if std::env::var("APPEND_EVENT_FIXTURE").is_ok() {
        // Later additions are appended, never rewritten: a line already there stays.
        let text = std::fs::read_to_string(FIXTURE).unwrap();
        let mut out = text.clone();
        for (_, e) in added_later() {
            let line = String::from_utf8(e.to_json()).unwrap();
            if !text.lines().any(|l| l == line) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        std::fs::write(FIXTURE, out).unwrap();
    }
    let text = std::fs::read_to_string(FIXTURE).expect("tests/fixtures/events-v1.jsonl");
    let mut types = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let event =
            Event::from_json(line.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        // Reading is lossless: the same bytes come back.
        let again: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        let stored: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(again, stored, "line {}", i + 1);
        types.insert(event.data.type_name());
    }
    assert_eq!(
        types.len(),
        13,
        "every event type is in the fixture: {types:?}"
    );
    for (what, e) in added_later() {
        let line = String::from_utf8(e.to_json()).unwrap();
        assert!(
            text.lines().any(|l| l == line),
            "the fixture has a line of {what}"
        );
    }
}

/// The one-pass reader takes `data` straight into its variant when `type` comes first
/// (as this service writes events); another writer may put `data` first, or leave it
/// out for an event with empty data. All three read the same.
#[test]
fn events_read_the_same_whatever_the_order_of_their_fields() {
    let text = std::fs::read_to_string(FIXTURE).expect("tests/fixtures/events-v1.jsonl");
    for (i, line) in text.lines().enumerate() {
        let written = Event::from_json(line.as_bytes()).unwrap();
        assert!(
            line.find("\"type\"") < line.find("\"data\""),
            "line {}: written with type first",
            i + 1
        );
        // serde_json's map sorts keys: `data` now comes before `type`.
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let reordered = serde_json::to_string(&value).unwrap();
        assert!(reordered.find("\"data\"") < reordered.find("\"type\""));
        assert_eq!(
            Event::from_json(reordered.as_bytes()).unwrap(),
            written,
            "line {}",
            i + 1
        );
        if value["data"].as_object().is_some_and(|d| d.is_empty()) {
            let mut without = value.clone();
            without.as_object_mut().unwrap().remove("data");
            let bytes = serde_json::to_vec(&without).unwrap();
            assert_eq!(Event::from_json(&bytes).unwrap(), written, "line {}", i + 1);
        }
    }
    // A missing field is an error that names it.
    let mut value: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    value.as_object_mut().unwrap().remove("tenant_id");
    let err = Event::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(err.to_string().contains("tenant_id"), "{err}");
}

/// The replay's decoder leaves a check's records unparsed: parsed afterwards they are
/// the records `from_json` reads, in either field order; every other event, and every
/// other field of a check, reads exactly as `from_json` reads it; and a normal decode
/// after a deferring one on the same thread parses records again.
#[test]
fn deferring_a_checks_records_loses_nothing() {
    let text = std::fs::read_to_string(FIXTURE).expect("tests/fixtures/events-v1.jsonl");
    let mut checks = 0;
    for (i, line) in text.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let reordered = serde_json::to_string(&value).unwrap();
        for bytes in [line.as_bytes(), reordered.as_bytes()] {
            let full = Event::from_json(bytes).unwrap();
            let (mut event, deferred) = Event::from_json_deferring_records(bytes).unwrap();
            match (&mut event.data, &full.data) {
                (
                    EventData::DnsChecked { records, .. },
                    EventData::DnsChecked {
                        records: expected, ..
                    },
                ) => {
                    assert!(records.is_empty(), "line {}: records were parsed", i + 1);
                    assert!(
                        !expected.is_empty(),
                        "line {}: the fixture check has records",
                        i + 1
                    );
                    *records = Event::parse_deferred_records(&deferred.expect("deferred")).unwrap();
                    checks += 1;
                }
                _ => assert!(deferred.is_none(), "line {}", i + 1),
            }
            assert_eq!(event, full, "line {}", i + 1);
            // The mode ends with the call.
            assert_eq!(Event::from_json(bytes).unwrap(), full);
        }
    }
    assert!(checks >= 2);
    // An unreadable event leaves the mode too.
    assert!(Event::from_json_deferring_records(b"{\"type\":").is_err());
    let check = text
        .lines()
        .find(|l| l.contains("\"dns_checked\""))
        .unwrap();
    match Event::from_json(check.as_bytes()).unwrap().data {
        EventData::DnsChecked { records, .. } => assert!(!records.is_empty()),
        _ => unreachable!(),
    }
}
