//! `schemas/asyncapi.yaml`: the AsyncAPI 3.0 document of the contract's channels,
//! generated beside the schemas it references (`./json/*.schema.json`), so it can
//! never name a schema that is not there. Validated by `@asyncapi/parser`
//! (`schemas/validate-asyncapi.mjs`, run by `scripts/check-schemas.sh`).

use crate::{COMMANDS, EVENT_TYPES};
use serde_json::{json, Map, Value};

const DRAFT7: &str = "application/schema+json;version=draft-07";

fn payload(file: &str) -> Value {
    json!({"schemaFormat": DRAFT7, "schema": {"$ref": format!("./json/{file}.schema.json")}})
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' || c == '.' || c == '-' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn msg_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/messages/{name}")})
}

fn channel_msg_ref(channel: &str, name: &str) -> Value {
    json!({"$ref": format!("#/channels/{channel}/messages/{name}")})
}

/// The document, as YAML text.
pub fn document() -> String {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();

    let uuid_param =
        |what: &str| json!({"description": format!("{what} (a UUID, lower case, hyphenated)")});
    let msg_id = json!({
        "type": "object",
        "properties": {"Nats-Msg-Id": {"type": "string", "description": "The command id again: JetStream drops quick repeats (a missing or different header changes nothing)."}}
    });

    // Commands: one channel per type; the handler receives them all.
    for (ty, internal) in COMMANDS {
        let name = camel(ty);
        let channel = format!("command{}", upper_first(&name));
        let who = match ty {
            "recheck" => "the scheduler",
            "preflight" => "the provider worker (after provisioning)",
            "provider_result" => "the provider worker",
            "fail_domain" => "an operator (`domainctl fail`)",
            _ => "the platform",
        };
        messages.insert(
            format!("{name}Command"),
            json!({
                "name": ty,
                "title": format!("command {ty}"),
                "summary": if internal { format!("INTERNAL: published by {who}, not part of the public contract.") } else { format!("A command of the contract, published by {who}.") },
                "contentType": "application/json",
                "headers": msg_id,
                "payload": payload(&format!("command.{ty}")),
                "examples": [{"name": "basic", "payload": {"$ref": format!("./examples/command.{ty}/basic.json")}}],
            }),
        );
        channels.insert(
            channel.clone(),
            json!({
                "address": format!("email_domains.commands.{ty}"),
                "title": format!("commands: {ty}"),
                "description": format!("Stream EMAIL_DOMAIN_COMMANDS (work queue, `email_domains.commands.>`). Bodies over 64 KiB are not read; unreadable messages go to the dead letters.{}", if internal { " INTERNAL." } else { "" }),
                "messages": {format!("{name}Command"): msg_ref(&format!("{name}Command"))},
            }),
        );
        operations.insert(
            format!("receive{}Command", upper_first(&name)),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{channel}")},
                "summary": format!("The command handler consumes `{ty}` commands."),
                "messages": [channel_msg_ref(&channel, &format!("{name}Command"))],
            }),
        );
        if internal && ty != "fail_domain" {
            operations.insert(
                format!("send{}Command", upper_first(&name)),
                json!({
                    "action": "send",
                    "channel": {"$ref": format!("#/channels/{channel}")},
                    "summary": format!("{} publishes `{ty}` commands.", upper_first(who)),
                    "messages": [channel_msg_ref(&channel, &format!("{name}Command"))],
                }),
            );
        }
    }

    // Outcomes.
    messages.insert(
        "outcome".into(),
        json!({"name": "outcome", "title": "outcome", "contentType": "application/json", "payload": payload("outcome"),
               "examples": [{"name": "accepted", "payload": {"$ref": "./examples/outcome/accepted.json"}}]}),
    );
    channels.insert(
        "outcomes".into(),
        json!({
            "address": "email_domains.outcomes.{command_id}",
            "title": "outcomes",
            "description": "Stream EMAIL_DOMAIN_OUTCOMES: exactly one outcome per command id (the public commands and `fail_domain`), kept without an age limit.",
            "parameters": {"command_id": uuid_param("The command's id")},
            "messages": {"outcome": msg_ref("outcome")},
        }),
    );
    operations.insert(
        "sendOutcome".into(),
        json!({"action": "send", "channel": {"$ref": "#/channels/outcomes"}, "summary": "The command handler answers every command.",
               "messages": [channel_msg_ref("outcomes", "outcome")]}),
    );

    // Events: one message per type, the envelope plus that type's data.
    let mut event_refs = Map::new();
    for ty in EVENT_TYPES {
        let name = format!("{}Event", camel(ty));
        messages.insert(
            name.clone(),
            json!({
                "name": ty,
                "title": format!("event {ty}"),
                "contentType": "application/json",
                "headers": {"type": "object", "properties": {"Nats-Msg-Id": {"type": "string", "description": "The event id."}}},
                "payload": {"schemaFormat": DRAFT7, "schema": {"allOf": [
                    {"$ref": "./json/event.schema.json"},
                    {"type": "object", "required": ["type", "data"], "properties": {
                        "type": {"const": ty},
                        "data": {"$ref": format!("./json/event-data.{ty}.schema.json")},
                    }},
                ]}},
                "examples": [{"name": ty, "payload": {"$ref": format!("./examples/event/{ty}.json")}}],
            }),
        );
        event_refs.insert(name.clone(), msg_ref(&name));
    }
    channels.insert(
        "events".into(),
        json!({
            "address": "email_domains.events.{tenant_id}.{domain_id}",
            "title": "event log",
            "description": "Stream EMAIL_DOMAIN_EVENTS: the append-only log (file storage, no limits, deny delete and purge). One subject per registration; `version` counts from 1 without gaps.",
            "parameters": {"tenant_id": uuid_param("The tenant"), "domain_id": uuid_param("The registration")},
            "messages": Value::Object(event_refs.clone()),
        }),
    );
    operations.insert(
        "sendEvent".into(),
        json!({"action": "send", "channel": {"$ref": "#/channels/events"}, "summary": "The command handler appends one event per accepted command (guarded by the expected last subject sequence).",
               "messages": event_refs.keys().map(|k| channel_msg_ref("events", k)).collect::<Vec<_>>()}),
    );
    operations.insert(
        "receiveEvent".into(),
        json!({"action": "receive", "channel": {"$ref": "#/channels/events"}, "summary": "Projectors, the analytics emitter, the scheduler and the provider worker consume the log.",
               "messages": event_refs.keys().map(|k| channel_msg_ref("events", k)).collect::<Vec<_>>()}),
    );

    // Analytics.
    messages.insert(
        "analyticsCloudEvent".into(),
        json!({"name": "analytics", "title": "analytics CloudEvent", "contentType": "application/cloudevents+json",
               "payload": payload("analytics.cloud_event"),
               "examples": [{"name": "verified", "payload": {"$ref": "./examples/analytics.cloud_event/verified.json"}}]}),
    );
    channels.insert(
        "analytics".into(),
        json!({
            "address": "analytics.email_domain.{name}",
            "title": "analytics",
            "description": "Stream EMAIL_DOMAIN_ANALYTICS (at least 7 days): CloudEvents 1.0, structured JSON mode, `type` = `email_domain.<name>`. Emitted once per source event, with ids derived from it.",
            "parameters": {"name": {"description": "The analytics name.", "enum": ["registered", "provisioned", "dns_checked", "dns_drift", "dns_restored", "verified", "activated", "failed", "deleted", "released"]}},
            "messages": {"analyticsCloudEvent": msg_ref("analyticsCloudEvent")},
        }),
    );
    operations.insert(
        "sendAnalytics".into(),
        json!({"action": "send", "channel": {"$ref": "#/channels/analytics"}, "summary": "The analytics emitter publishes CloudEvents derived from the log.",
               "messages": [channel_msg_ref("analytics", "analyticsCloudEvent")]}),
    );

    // Dead letters.
    messages.insert(
        "deadLetter".into(),
        json!({"name": "dead_letter", "title": "dead letter", "contentType": "application/json", "payload": payload("dead_letter"),
               "examples": [{"name": "unreadable_json", "payload": {"$ref": "./examples/dead_letter/unreadable_json.json"}},
                            {"name": "too_large_truncated", "payload": {"$ref": "./examples/dead_letter/too_large_truncated.json"}}]}),
    );
    channels.insert(
        "deadLetters".into(),
        json!({
            "address": "email_domains.dead_letters.{reason}",
            "title": "dead letters",
            "description": "Stream EMAIL_DOMAIN_DEAD_LETTERS (no age limit): messages on `email_domains.commands.*` that are not commands (or readable commands that can never take effect), with their subject, headers and bytes, each letter cut to fit one message (`body_truncated`, with the original `body_size` and `body_sha256`).",
            "parameters": {"reason": {"description": "Why the message is not a command.", "enum": ["unreadable_json", "not_an_object", "missing_command_id", "unknown_command", "too_large", "invalid_command", "unprocessable"]}},
            "messages": {"deadLetter": msg_ref("deadLetter")},
        }),
    );
    operations.insert(
        "sendDeadLetter".into(),
        json!({"action": "send", "channel": {"$ref": "#/channels/deadLetters"}, "summary": "The command handler keeps what it cannot read.",
               "messages": [channel_msg_ref("deadLetters", "deadLetter")]}),
    );

    // Queries: request-reply (core NATS, the reply goes to the requester's inbox).
    for q in ["sender", "domains"] {
        let req = format!("query{}Request", upper_first(q));
        let rep = format!("query{}Reply", upper_first(q));
        messages.insert(
            req.clone(),
            json!({"name": format!("query.{q}.request"), "contentType": "application/json", "payload": payload(&format!("query.{q}.request")),
                   "examples": [{"name": "basic", "payload": {"$ref": format!("./examples/query.{q}.request/basic.json")}}]}),
        );
        messages.insert(
            rep.clone(),
            json!({"name": format!("query.{q}.reply"), "contentType": "application/json", "payload": payload(&format!("query.{q}.reply"))}),
        );
        let channel = format!("query{}", upper_first(q));
        let reply_channel = format!("query{}Reply", upper_first(q));
        channels.insert(
            channel.clone(),
            json!({
                "address": format!("email_domains.query.{q}"),
                "title": format!("query {q}"),
                "description": if q == "sender" { "The tenant's sender address. An answer here means the stack is up." } else { "The tenant's `email_domains` rows, deactivated ones included." },
                "messages": {req.clone(): msg_ref(&req)},
            }),
        );
        channels.insert(
            reply_channel.clone(),
            json!({
                "address": null,
                "title": format!("query {q} reply"),
                "description": "The requester's reply subject (its inbox), given with the request.",
                "messages": {rep.clone(): msg_ref(&rep)},
            }),
        );
        operations.insert(
            format!("answer{}", upper_first(&channel)),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{channel}")},
                "summary": format!("The query service answers `email_domains.query.{q}` (queue group `email-domains-query`)."),
                "messages": [channel_msg_ref(&channel, &req)],
                "bindings": {"nats": {"queue": "email-domains-query", "bindingVersion": "0.1.0"}},
                "reply": {
                    "channel": {"$ref": format!("#/channels/{reply_channel}")},
                    "messages": [channel_msg_ref(&reply_channel, &rep)],
                },
            }),
        );
    }

    let sections: Vec<(&str, Value)> = vec![
        ("asyncapi", json!("3.0.0")),
        (
            "info",
            json!({
                "title": "Managed email domains",
                "version": "1.0.0",
                "description": "The NATS contract of the managed email domain service (docs/interface.md §2): commands, outcomes, the event log, analytics CloudEvents, dead letters and queries. Generated by `cargo run -p schemagen`; do not edit by hand. Every schema allows properties it does not list: the contract may grow.",
            }),
        ),
        ("defaultContentType", json!("application/json")),
        (
            "servers",
            json!({"nats": {
                "host": "nats:4222",
                "protocol": "nats",
                "description": "NATS with JetStream (`NATS_URL`). In k8s/: the `nats` Service of the 3-node cluster, one user per service.",
                "bindings": {"nats": {}},
            }}),
        ),
        ("channels", Value::Object(channels)),
        ("operations", Value::Object(operations)),
        ("components", json!({"messages": Value::Object(messages)})),
    ];
    let mut out = String::from(
        "# Generated by `cargo run -p schemagen` from the Rust types: do not edit by hand.\n",
    );
    for (key, value) in sections {
        let mut m = Map::new();
        m.insert(key.to_string(), crate::canonical(&value));
        out.push_str(&serde_yaml::to_string(&Value::Object(m)).expect("YAML"));
    }
    out
}
