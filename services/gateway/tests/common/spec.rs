//! Checks a response against `openapi.yaml`: the status must be one the spec gives
//! for the operation, the content type one it gives for that status, and a JSON body
//! must conform to the response's schema.
//!
//! OpenAPI 3.0 schemas are almost JSON Schema; the differences handled here:
//! - `nullable: true` becomes a `type` array with `"null"` (or `anyOf` with
//!   `{"type": "null"}` where there is no `type`, e.g. next to `allOf`), and `null`
//!   joins an `enum`;
//! - `example` is dropped; `format` is checked (`uuid`, `date-time`);
//! - `#/components/schemas/...` refs resolve against a root document that carries the
//!   spec's (converted) components next to the schema being checked.
//!
//! Strict by default: an object schema with `properties` and no `additionalProperties`
//! gets `additionalProperties: false`, so a field the server sends but the spec does
//! not describe is an error too.

use jsonschema::Validator;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Spec {
    doc: Value,
    components: Value,
    strict: bool,
    validators: Mutex<HashMap<String, std::sync::Arc<Validator>>>,
}

impl Spec {
    /// The gateway's `openapi.yaml`, strict.
    pub fn gateway() -> Spec {
        Spec::from_yaml(gateway::OPENAPI_YAML, true)
    }

    pub fn from_yaml(yaml: &str, strict: bool) -> Spec {
        let doc: Value = serde_yaml::from_str(yaml).expect("openapi.yaml is YAML");
        let mut schemas = Map::new();
        for (name, s) in doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            schemas.insert(name, to_json_schema(&s, strict));
        }
        Spec {
            components: json!({ "schemas": schemas }),
            doc,
            strict,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The path template of the spec that `path` (query string allowed) matches.
    pub fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or("");
        let want: Vec<&str> = path.split('/').collect();
        self.doc["paths"].as_object()?.keys().find_map(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            (parts.len() == want.len()
                && parts.iter().zip(&want).all(|(p, w)| {
                    (p.starts_with('{') && p.ends_with('}') && !w.is_empty()) || p == w
                }))
            .then(|| t.clone())
        })
    }

    /// Follows a local `$ref` (`#/a/b/c`) in the spec.
    fn deref<'a>(&'a self, v: &'a Value) -> &'a Value {
        let mut v = v;
        for _ in 0..8 {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return v;
            };
            let mut at = &self.doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            v = at;
        }
        v
    }

    /// Checks one response. `method` in any case; `path` as requested (a full URL,
    /// or a path with or without its query string); `content_type` the header as sent.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(), String> {
        let path = match path.find("://") {
            Some(i) => {
                let rest = &path[i + 3..];
                &rest[rest.find('/').unwrap_or(rest.len())..]
            }
            None => path,
        };
        let what = format!("{} {path} → {status}", method.to_uppercase());
        let template = self
            .template(path)
            .ok_or_else(|| format!("{what}: the spec has no path for this"))?;
        let op = &self.doc["paths"][&template][method.to_lowercase()];
        if op.is_null() {
            return Err(format!("{what}: the spec has no {method} on {template}"));
        }
        let responses = &op["responses"];
        let response = responses
            .get(status.to_string())
            .or_else(|| responses.get(format!("{}XX", status / 100)))
            .or_else(|| responses.get("default"))
            .ok_or_else(|| {
                format!(
                    "{what}: status {status} is not described for {method} {template} (described: {:?})",
                    responses.as_object().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default()
                )
            })?;
        let response = self.deref(response);
        let content = response["content"].as_object();
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{what}: the spec describes no body, the server sent {body:?}"
                ))
            };
        };
        let media = content_type
            .ok_or_else(|| {
                format!(
                    "{what}: no Content-Type (the spec says {:?})",
                    content.keys()
                )
            })?
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let media_spec = content.get(&media).ok_or_else(|| {
            format!(
                "{what}: Content-Type {media} is not described (described: {:?})",
                content.keys().collect::<Vec<_>>()
            )
        })?;
        let schema = &media_spec["schema"];
        let is_json = media == "application/json" || media.ends_with("+json");
        if !is_json {
            // A text body: the spec's schemas here say `type: string`, which any body is.
            return Ok(());
        }
        let instance: Value = serde_json::from_str(body).map_err(|e| {
            format!("{what}: Content-Type {media} but the body is not JSON ({e}): {body}")
        })?;
        if schema.is_null() {
            return Ok(());
        }
        let key = format!("{template} {method} {status} {media}");
        let validator = self.validator(&key, schema)?;
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("  at {:?}: {e}", e.instance_path.as_str()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: the body does not conform to the spec ({key}):\n{}\nbody: {body}",
                errors.join("\n")
            ))
        }
    }

    /// Compiles the schema of every JSON response the spec describes; returns how many.
    pub fn compile_all(&self) -> Result<usize, String> {
        let mut n = 0;
        for (template, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for (status, response) in op["responses"].as_object().into_iter().flatten() {
                    let response = self.deref(response);
                    for (media, m) in response["content"].as_object().into_iter().flatten() {
                        if media == "application/json" && !m["schema"].is_null() {
                            self.validator(
                                &format!("{template} {method} {status} {media}"),
                                &m["schema"],
                            )?;
                            n += 1;
                        }
                    }
                }
            }
        }
        Ok(n)
    }

    fn validator(&self, key: &str, schema: &Value) -> Result<std::sync::Arc<Validator>, String> {
        if let Some(v) = self.validators.lock().unwrap().get(key) {
            return Ok(v.clone());
        }
        let mut root = match to_json_schema(schema, self.strict) {
            Value::Object(m) => m,
            other => return Err(format!("{key}: schema is not an object: {other}")),
        };
        root.insert("components".into(), self.components.clone());
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(true)
            .build(&Value::Object(root))
            .map_err(|e| format!("{key}: the spec's schema does not compile: {e}"))?;
        let v = std::sync::Arc::new(v);
        self.validators
            .lock()
            .unwrap()
            .insert(key.to_string(), v.clone());
        Ok(v)
    }
}

/// An OpenAPI 3.0 schema object as JSON Schema (see the module docs).
pub fn to_json_schema(s: &Value, strict: bool) -> Value {
    let Value::Object(m) = s else {
        return s.clone();
    };
    if m.contains_key("$ref") {
        // OpenAPI 3.0: siblings of $ref are ignored.
        return json!({ "$ref": m["$ref"] });
    }
    let mut out = Map::new();
    for (k, v) in m {
        let v = match k.as_str() {
            "example" | "nullable" | "description" | "xml" | "externalDocs" | "deprecated"
            | "readOnly" | "writeOnly" | "discriminator" => continue,
            "properties" => Value::Object(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(p, s)| (p.clone(), to_json_schema(s, strict)))
                    .collect(),
            ),
            "items" | "not" => to_json_schema(v, strict),
            "additionalProperties" if v.is_object() => to_json_schema(v, strict),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| to_json_schema(s, strict))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if strict && out.contains_key("properties") && !out.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if m.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::Array(e)) = out.get_mut("enum") {
            if !e.contains(&Value::Null) {
                e.push(Value::Null);
            }
        }
        match out.get("type").cloned() {
            Some(Value::String(t)) => {
                out.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(mut ts)) => {
                if !ts.contains(&json!("null")) {
                    ts.push(json!("null"));
                }
                out.insert("type".into(), Value::Array(ts));
            }
            _ => return json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] }),
        }
    }
    Value::Object(out)
}
