//! JSON Schemas of the contract's messages, generated from the Rust types, and
//! example messages serialised from real values.
//!
//! [`generate`] returns every file under `schemas/` that this crate owns
//! (`json/*.schema.json`, `examples/<schema>/*.json` and `asyncapi.yaml`), keyed by its path relative
//! to `schemas/`. The binary writes them (or, with `--check`, compares them); the
//! drift test does the same in memory.
#![forbid(unsafe_code)]

pub mod asyncapi;
pub mod examples;
pub mod wire;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use email_domain_events::event::Event;
use email_domain_events::outcome::Outcome;
use email_domain_events::records::DnsRecord;

/// The `schemas/` folder of the workspace.
pub fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// The command types and the schema of each body: (type, internal).
pub const COMMANDS: [(&str, bool); 8] = [
    ("register_domain", false),
    ("dns_configured", false),
    ("refresh_status", false),
    ("delete_domain", false),
    ("fail_domain", true),
    ("recheck", true),
    ("provider_result", true),
    ("preflight", true),
];

/// Every event type (the `type` of an event, and the `data` schema of each).
pub const EVENT_TYPES: [&str; 13] = [
    "domain_registered",
    "domain_provisioned",
    "check_requested",
    "provisioning_failed",
    "dns_checked",
    "provider_polled",
    "provider_domain_vanished",
    "verification_failed",
    "window_reopened",
    "domain_deleted",
    "domain_released",
    "provider_cleaned_up",
    "preflight_checked",
];

fn root_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// A UUID in its hyphenated text form (the contract writes lower case; readers accept either).
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Adds a UUID pattern beside every `format: uuid`, and removes every `additionalProperties: false` / `unevaluatedProperties: false`: the
/// contract may grow, so readers must accept properties they do not know.
fn open_up(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // `uuid` is not a draft-07 format: validators would ignore it, so say it with a pattern too.
            if m.get("format") == Some(&json!("uuid")) {
                m.insert("pattern".into(), json!(UUID_PATTERN));
            }
            for key in ["additionalProperties", "unevaluatedProperties"] {
                if m.get(key) == Some(&Value::Bool(false)) {
                    m.remove(key);
                }
            }
            m.values_mut().for_each(open_up);
        }
        Value::Array(a) => a.iter_mut().for_each(open_up),
        _ => {}
    }
}

/// Keys sorted at every level, so the files are the same whatever serde_json's map is.
pub(crate) fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// `#/definitions/X` references reachable from `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                if let Some(name) = r.strip_prefix("#/definitions/") {
                    out.insert(name.to_string());
                }
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Makes `schema` a root schema of its own, with the definitions it needs from `defs`.
fn with_definitions(mut schema: Value, defs: &Map<String, Value>) -> Value {
    let mut needed = BTreeSet::new();
    refs(&schema, &mut needed);
    loop {
        let mut more = needed.clone();
        for name in &needed {
            if let Some(d) = defs.get(name) {
                refs(d, &mut more);
            }
        }
        if more == needed {
            break;
        }
        needed = more;
    }
    let obj = schema.as_object_mut().expect("a schema object");
    obj.insert(
        "$schema".into(),
        json!("http://json-schema.org/draft-07/schema#"),
    );
    if !needed.is_empty() {
        let picked: Map<String, Value> = needed
            .iter()
            .filter_map(|n| defs.get(n).map(|d| (n.clone(), d.clone())))
            .collect();
        obj.insert("definitions".into(), Value::Object(picked));
    }
    schema
}

fn titled(mut schema: Value, title: &str, description: Option<&str>) -> Value {
    let obj = schema.as_object_mut().expect("a schema object");
    obj.insert("title".into(), json!(title));
    if let Some(d) = description {
        obj.insert("description".into(), json!(d));
    }
    schema
}

/// The `data` schema of each event type, taken from the generated envelope schema
/// (each `oneOf` branch is `{type: const, data: {...}}`).
fn event_data_schemas(event_schema: &Value) -> BTreeMap<String, Value> {
    let defs = event_schema
        .get("definitions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut stack = vec![event_schema];
    while let Some(s) = stack.pop() {
        if let Some(branches) = s
            .get("oneOf")
            .or_else(|| s.get("anyOf"))
            .and_then(Value::as_array)
        {
            for b in branches {
                let ty = b
                    .pointer("/properties/type/const")
                    .or_else(|| b.pointer("/properties/type/enum/0"));
                match (ty.and_then(Value::as_str), b.pointer("/properties/data")) {
                    (Some(t), Some(data)) => {
                        let mut d = data.clone();
                        if let Some(r) = d.get("$ref").and_then(Value::as_str) {
                            let name = r.trim_start_matches("#/definitions/");
                            d = defs.get(name).cloned().unwrap_or(d);
                        }
                        if let (Some(desc), Some(obj)) = (b.get("description"), d.as_object_mut()) {
                            obj.entry("description").or_insert_with(|| desc.clone());
                        }
                        out.insert(t.to_string(), with_definitions(d, &defs));
                    }
                    _ => stack.push(b),
                }
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            stack.extend(all.iter());
        }
    }
    if out.is_empty() {
        if let Some(d) = defs.get("EventData") {
            let mut wrapped = event_schema.clone();
            wrapped.as_object_mut().unwrap().insert(
                "oneOf".into(),
                d.get("oneOf").cloned().unwrap_or(Value::Null),
            );
            return event_data_schemas(&wrapped);
        }
    }
    out
}

/// Every schema file, keyed by its name under `schemas/json/`.
pub fn schemas() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut put = |name: String, mut schema: Value| {
        open_up(&mut schema);
        out.insert(name, canonical(&schema));
    };

    for (ty, internal) in COMMANDS {
        let schema = match ty {
            "register_domain" => root_schema::<wire::RegisterDomain>(),
            "fail_domain" => root_schema::<wire::FailDomain>(),
            // Same body as a re-check: a domain id and nothing else.
            "recheck" | "preflight" => root_schema::<wire::Recheck>(),
            "provider_result" => root_schema::<wire::ProviderResultCommand>(),
            _ => root_schema::<wire::DomainCommand>(),
        };
        let desc = format!(
            "{}Body of `email_domains.commands.{ty}` (header `Nats-Msg-Id: <command_id>`). Decoded leniently: \
             unknown properties are ignored, and `domain` is a plain string (a bad name earns the outcome \
             `invalid_domain`, not a schema error). {}",
            if internal { "INTERNAL (not part of the public contract). " } else { "" },
            schema.get("description").and_then(Value::as_str).unwrap_or("")
        );
        put(
            format!("command.{ty}.schema.json"),
            titled(schema, &format!("command {ty}"), Some(desc.trim())),
        );
    }

    put(
        "outcome.schema.json".into(),
        titled(
            root_schema::<Outcome>(),
            "outcome",
            Some("Exactly one per command, on `email_domains.outcomes.<command_id>` (docs/interface.md §2.2)."),
        ),
    );

    let event = titled(
        root_schema::<Event>(),
        "event",
        Some(
            "One stored event on `email_domains.events.<tenant_id>.<domain_id>` (docs/interface.md §2.4): the envelope, \
             `type` and its `data` (see `event-data.<type>.schema.json`). `schema_version` absent means 1.",
        ),
    );
    let data = event_data_schemas(&event);
    assert_eq!(
        data.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        EVENT_TYPES.into_iter().collect::<BTreeSet<_>>(),
        "every event type has a data schema"
    );
    for (ty, schema) in data {
        let title = format!("event data {ty}");
        let desc = format!(
            "The `data` of an event of type `{ty}`. {}",
            schema
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
        );
        put(
            format!("event-data.{ty}.schema.json"),
            titled(schema, &title, Some(desc.trim())),
        );
    }
    put("event.schema.json".into(), event);

    put(
        "analytics.cloud_event.schema.json".into(),
        titled(
            root_schema::<wire::AnalyticsCloudEvent>(),
            "analytics CloudEvent",
            None,
        ),
    );
    put(
        "dead_letter.schema.json".into(),
        titled(root_schema::<wire::DeadLetter>(), "dead letter", None),
    );
    put(
        "query.sender.request.schema.json".into(),
        titled(
            root_schema::<wire::QueryRequest>(),
            "query sender request",
            Some("Request on `email_domains.query.sender`."),
        ),
    );
    put(
        "query.sender.reply.schema.json".into(),
        titled(
            root_schema::<wire::SenderReply>(),
            "query sender reply",
            None,
        ),
    );
    put(
        "query.domains.request.schema.json".into(),
        titled(
            root_schema::<wire::QueryRequest>(),
            "query domains request",
            Some("Request on `email_domains.query.domains`."),
        ),
    );
    put(
        "query.domains.reply.schema.json".into(),
        titled(
            root_schema::<wire::DomainsReply>(),
            "query domains reply",
            None,
        ),
    );
    put(
        "email_domain_row.schema.json".into(),
        titled(
            root_schema::<wire::EmailDomainRow>(),
            "email_domains row",
            None,
        ),
    );
    put(
        "dns_record.schema.json".into(),
        titled(
            root_schema::<DnsRecord>(),
            "DNS record",
            Some("A record in `email_domains.dns_records` and in `domainctl dns-check` output (docs/interface.md §3)."),
        ),
    );
    out
}

/// The text of a JSON file as written: pretty, with a final newline.
pub fn to_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON");
    s.push('\n');
    s
}

/// Every generated file, keyed by its path relative to `schemas/`.
pub fn generate() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for (name, schema) in schemas() {
        files.insert(format!("json/{name}"), to_text(&schema));
    }
    for (kind, name, value) in examples::all() {
        files.insert(
            format!("examples/{kind}/{name}.json"),
            to_text(&canonical(&value)),
        );
    }
    files.insert("asyncapi.yaml".into(), asyncapi::document());
    files
}

/// The schema (under `json/`) an example kind validates against.
pub fn schema_for_kind(kind: &str) -> String {
    format!("{kind}.schema.json")
}
