//! The checked-in schemas and examples are what the Rust types generate (drift), and
//! every example message validates against its schema.

use serde_json::{json, Value};
use std::collections::BTreeMap;

fn load(path: &str) -> Value {
    let p = schemagen::schemas_dir().join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("a valid JSON Schema")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

#[test]
fn checked_in_files_match_the_generated_ones() {
    let dir = schemagen::schemas_dir();
    let mut drift = Vec::new();
    for (path, text) in schemagen::generate() {
        match std::fs::read_to_string(dir.join(&path)) {
            Ok(current) if current == text => {}
            Ok(_) => drift.push(format!("changed: schemas/{path}")),
            Err(_) => drift.push(format!("missing: schemas/{path}")),
        }
    }
    assert!(
        drift.is_empty(),
        "schemas drifted from the Rust types; run `cargo run -p schemagen`:\n{}",
        drift.join("\n")
    );
}

#[test]
fn every_schema_is_valid_and_open_to_new_properties() {
    for (name, schema) in schemagen::schemas() {
        jsonschema::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{name}: not a valid schema: {e}"));
        validator(&schema);
        let text = schema.to_string();
        assert!(
            !text.contains(r#""additionalProperties":false"#),
            "{name} forbids extra properties"
        );
        assert!(
            !text.contains(r#""unevaluatedProperties":false"#),
            "{name} forbids extra properties"
        );
    }
}

#[test]
fn every_example_validates_against_its_schema() {
    let schemas = schemagen::schemas();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let dir = schemagen::schemas_dir().join("examples");
    for kind_dir in std::fs::read_dir(&dir).expect("schemas/examples").flatten() {
        let kind = kind_dir.file_name().to_string_lossy().to_string();
        let schema = schemas
            .get(&schemagen::schema_for_kind(&kind))
            .unwrap_or_else(|| panic!("no schema for examples/{kind}"));
        let v = validator(schema);
        for file in std::fs::read_dir(kind_dir.path()).unwrap().flatten() {
            let name = format!("examples/{kind}/{}", file.file_name().to_string_lossy());
            let example = load(&name);
            let errs = errors(&v, &example);
            assert!(errs.is_empty(), "{name} does not validate: {errs:#?}");
            // Extra properties are allowed everywhere (the contract may grow).
            if let Value::Object(mut m) = example.clone() {
                m.insert("a_field_of_tomorrow".into(), json!({"x": 1}));
                assert!(
                    errors(&v, &Value::Object(m)).is_empty(),
                    "{name} + an unknown property does not validate"
                );
            }
            // An event's data validates against the schema of its type, too.
            if kind == "event" {
                let ty = example["type"].as_str().unwrap();
                let data_v = validator(&schemas[&format!("event-data.{ty}.schema.json")]);
                let errs = errors(&data_v, &example["data"]);
                assert!(errs.is_empty(), "{name}: data does not validate: {errs:#?}");
            }
            *by_kind.entry(kind.clone()).or_default() += 1;
        }
    }
    // Every schema has at least one example.
    for name in schemas.keys() {
        let kind = name.trim_end_matches(".schema.json");
        assert!(
            by_kind.get(kind).copied().unwrap_or(0) > 0,
            "no example for {name}"
        );
    }
}

#[test]
fn every_event_type_and_analytics_name_has_an_example() {
    let events = schemagen::examples::events();
    let types: std::collections::BTreeSet<_> = events.iter().map(|e| e.data.type_name()).collect();
    assert_eq!(types, schemagen::EVENT_TYPES.into_iter().collect());
    let names: std::collections::BTreeSet<_> = events
        .iter()
        .flat_map(email_domain_events::analytics::names)
        .collect();
    for required in [
        "registered",
        "dns_checked",
        "verified",
        "activated",
        "failed",
        "deleted",
    ] {
        assert!(
            names.contains(required),
            "no analytics example for {required}"
        );
        let _ = load(&format!("examples/analytics.cloud_event/{required}.json"));
    }
}

#[test]
fn schemas_reject_what_is_really_wrong_and_accept_any_domain_string() {
    let s = schemagen::schemas();
    let register = validator(&s["command.register_domain.schema.json"]);
    let ok = json!({"command_id": "0b5e7c4e-8f0a-4b8e-9a43-5f1c2d3e4f50", "tenant_id": "1c9d6e2a-0000-4000-8000-000000000001"});
    for domain in [
        "acme.com",
        "ACME.com.",
        "co.uk",
        "has space",
        "_x.example",
        "bücher.de",
        "",
    ] {
        let mut c = ok.clone();
        c["domain"] = json!(domain);
        assert!(
            errors(&register, &c).is_empty(),
            "the schema must take {domain:?}: invalid_domain is the decider's"
        );
    }
    assert!(!errors(&register, &ok).is_empty(), "domain is required");
    let mut c = ok.clone();
    c["domain"] = json!(42);
    assert!(!errors(&register, &c).is_empty(), "a domain is a string");
    let mut c = ok.clone();
    c["domain"] = json!("acme.com");
    c["tenant_id"] = json!("not-a-uuid");
    assert!(!errors(&register, &c).is_empty(), "tenant_id is a UUID");
    let outcome = validator(&s["outcome.schema.json"]);
    assert!(!errors(&outcome, &json!({"command_id": null, "outcome": "maybe"})).is_empty());
}

#[test]
fn command_examples_are_what_the_decoder_reads() {
    for (kind, name, body) in schemagen::examples::all() {
        let Some(ty) = kind.strip_prefix("command.") else {
            continue;
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        let decoded = email_domain_events::command::decode(ty, &bytes);
        assert!(
            decoded.is_ok(),
            "{kind}/{name} is not decoded as a command: {:?}",
            decoded.err()
        );
    }
    for e in schemagen::examples::events() {
        let back = email_domain_events::event::Event::from_json(&e.to_json()).unwrap();
        assert_eq!(back, e);
    }
}
