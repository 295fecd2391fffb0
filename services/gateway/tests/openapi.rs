//! `openapi.yaml` describes exactly the routes the router serves (gateway::ROUTES;
//! the API test calls each of those on a live gateway), and is well-formed OpenAPI 3.

use serde_yaml::Value;
use std::collections::BTreeSet;

fn spec() -> Value {
    serde_yaml::from_str(gateway::OPENAPI_YAML).expect("openapi.yaml is YAML")
}

#[test]
fn every_route_is_described_and_every_description_is_served() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let methods = ["get", "post", "put", "patch", "delete", "head", "options"];
    let mut described = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for (k, _) in item.as_mapping().unwrap() {
            let k = k.as_str().unwrap();
            if methods.contains(&k) {
                described.insert((k.to_string(), path.as_str().unwrap().to_string()));
            }
        }
    }
    let served: BTreeSet<_> = gateway::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = served.difference(&described).collect();
    let extra: Vec<_> = described.difference(&served).collect();
    assert!(missing.is_empty(), "served but not described: {missing:?}");
    assert!(extra.is_empty(), "described but not served: {extra:?}");
}

#[test]
fn every_operation_has_responses_and_every_ref_resolves() {
    let spec = spec();
    fn walk(v: &Value, spec: &Value, refs: &mut usize) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    if k.as_str() == Some("$ref") {
                        let r = v.as_str().unwrap();
                        let mut at = spec;
                        for part in r.trim_start_matches("#/").split('/') {
                            at = &at[part];
                        }
                        assert!(!at.is_null(), "unresolved $ref {r}");
                        *refs += 1;
                    } else {
                        walk(v, spec, refs);
                    }
                }
            }
            Value::Sequence(s) => s.iter().for_each(|v| walk(v, spec, refs)),
            _ => {}
        }
    }
    let mut refs = 0;
    walk(&spec, &spec, &mut refs);
    assert!(refs > 20);
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for (m, op) in item.as_mapping().unwrap() {
            if m.as_str() == Some("parameters") {
                continue;
            }
            assert!(
                op["responses"]
                    .as_mapping()
                    .map(|r| !r.is_empty())
                    .unwrap_or(false),
                "{path:?} {m:?} has no responses"
            );
            if path.as_str().unwrap().starts_with("/api/v1/domains")
                || path.as_str() == Some("/api/v1/session")
            {
                assert!(
                    !op["security"].is_null(),
                    "{path:?} {m:?} must say it needs the tenant token"
                );
            }
        }
    }
    assert!(!gateway::OPENAPI_YAML
        .to_ascii_lowercase()
        .contains("resend"));
}
