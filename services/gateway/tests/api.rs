//! The gateway's API over real HTTP against the whole stack (own nats-server, own
//! database, test DNS, dev provider, every service in-process).

mod common;

use common::spec::Spec;
use common::Gw;
use email_domain_events::event::{CheckTrigger, EventData};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Every body the gateway sent, to check that none names the provider.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

struct Api<'a> {
    http: Client,
    gw: &'a Gw,
    seen: std::sync::Mutex<Seen>,
    /// Every response is checked against openapi.yaml (status, content type, JSON body).
    spec: Spec,
    /// How many responses were checked, and how many of them had a JSON body.
    checked: std::sync::Mutex<(usize, usize)>,
    /// The headers of the last response.
    headers: std::sync::Mutex<reqwest::header::HeaderMap>,
}

impl<'a> Api<'a> {
    fn new(gw: &'a Gw) -> Self {
        Api {
            http: Client::new(),
            gw,
            seen: Default::default(),
            spec: Spec::gateway(),
            checked: Default::default(),
            headers: Default::default(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let body = body.map(|b| ("application/json", b.to_string()));
        self.call_raw(method, path, token, body).await
    }

    /// A request with a body as given (`(content type, text)`); the response is
    /// checked against openapi.yaml like every other.
    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (StatusCode, String) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.gw.base)
        };
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some((ct, b)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, ct).body(b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        *self.headers.lock().unwrap() = res.headers().clone();
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let text = res.text().await.unwrap();
        if let Err(e) = self.spec.check(
            method.as_str(),
            &url,
            status.as_u16(),
            content_type.as_deref(),
            &text,
        ) {
            panic!("the response does not match openapi.yaml: {e}");
        }
        {
            let mut c = self.checked.lock().unwrap();
            c.0 += 1;
            if content_type.is_some_and(|t| t.starts_with("application/json")) {
                c.1 += 1;
            }
        }
        self.seen
            .lock()
            .unwrap()
            .0
            .push((format!("{method} {path}"), text.clone()));
        (status, text)
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, t) = self.call(method, path, token, body).await;
        (
            s,
            serde_json::from_str(&t)
                .unwrap_or_else(|_| panic!("{path} answered non-JSON {s}: {t}")),
        )
    }
}

/// The last response's `Retry-After`, in seconds.
fn retry_after(api: &Api<'_>) -> Option<u64> {
    api.headers
        .lock()
        .unwrap()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| {
            v.to_str()
                .unwrap()
                .parse()
                .expect("Retry-After in whole seconds")
        })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A 429 answer with the gateway's `rate_limited` error.
fn assert_rate_limited(status: StatusCode, v: &Value) {
    assert_eq!(
        (status, code(v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "{v}"
    );
}

/// Waits until GET /api/v1/domains/{id} satisfies `pred`.
async fn wait_domain(
    api: &Api<'_>,
    token: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (s, v) = api
            .json(
                Method::GET,
                &format!("/api/v1/domains/{id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if pred(&v["domain"]) {
            return v["domain"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "waited 40 s for {what}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes a share link; returns its query string.
async fn new_link(api: &Api<'_>, share_path: &str, token: &str) -> String {
    let (s, v) = api
        .json(
            Method::POST,
            share_path,
            Some(token),
            Some(json!({"ttl_secs": 600})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["url"]
        .as_str()
        .unwrap()
        .split_once('?')
        .unwrap()
        .1
        .to_string()
}

/// The zone file's rdata strings for `name` + `type`, TXT character-strings joined.
fn zone_values(zone: &str, name: &str, rtype: &str) -> Vec<String> {
    zone.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.splitn(5, '\t').collect();
            (cols.len() == 5 && cols[0] == format!("{name}.") && cols[3] == rtype)
                .then(|| cols[4].to_string())
        })
        .map(|rdata| {
            if rtype == "TXT" {
                // "a" "b" -> ab
                let mut out = String::new();
                let mut in_q = false;
                let mut esc = false;
                for c in rdata.chars() {
                    if esc {
                        out.push(c);
                        esc = false;
                    } else if c == '\\' && in_q {
                        esc = true;
                    } else if c == '"' {
                        in_q = !in_q;
                    } else if in_q {
                        out.push(c);
                    }
                }
                out
            } else {
                rdata
            }
        })
        .collect()
}

fn assert_downloads_hold_every_record(csv: &str, zone: &str, records: &[Value]) {
    assert!(
        csv.starts_with("type,host,name,value,priority,purpose,required,dns_status"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        records.len() + 1,
        "one CSV line per record: {csv}"
    );
    for r in records {
        let (name, value, ty) = (
            r["name"].as_str().unwrap(),
            r["value"].as_str().unwrap(),
            r["type"].as_str().unwrap(),
        );
        assert!(
            csv.lines()
                .any(|l| l.contains(name) && l.contains(value) && l.starts_with(ty)),
            "CSV lacks {name} {ty}: {csv}"
        );
        let values = zone_values(zone, name, ty);
        let expected = match ty {
            "MX" => format!("{} {value}.", r["priority"].as_u64().unwrap_or(10)),
            "CNAME" => format!("{value}."),
            _ => value.to_string(),
        };
        assert!(
            values.contains(&expected),
            "zone lacks {name} {ty} {expected}: {values:?}\n{zone}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_flow_tenancy_plans_share_links_and_downloads() {
    let started = Instant::now();
    // This flow calls every route, the checks of one domain several times within
    // seconds: limits it does not reach (the limits have their own test).
    let gw = Gw::start_with(|o| {
        o.tenant_commands = gateway::limits::Rate::per_minute(600, 100);
        o.domain_checks = gateway::limits::Rate::every_secs(1, 100);
    })
    .await;
    let api = Api::new(&gw);
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    let token = gw.token(tenant, "enterprise", 600);
    let other_token = gw.token(other, "enterprise", 600);
    let domain = "gw-flow.test";

    // The page and its assets; the session.
    let (s, html) = api.call(Method::GET, "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Managed sending"));
    let (s, session) = api
        .json(Method::GET, "/api/v1/session", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{session}");
    assert_eq!(session["tenant_id"], tenant.to_string());
    assert_eq!(session["sender"]["managed"], false);

    // Register.
    let (s, reg) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(&token),
            Some(json!({"domain": "GW-Flow.test."})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let id = reg["domain"]["id"].as_str().unwrap().to_string();
    assert_eq!(reg["domain"]["domain"], domain);
    // Recorded as the tenant's: the token's `sub` never passes for an operator or a service.
    let row = gw.stack.wait_status(tenant, domain, "awaiting_dns").await;
    assert_eq!(row["metadata"]["requested_by"], "tenant:test", "{row}");
    let (s, again) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(&token),
            Some(json!({"domain": domain})),
        )
        .await;
    assert_eq!(
        (s, code(&again)),
        (StatusCode::CONFLICT, "already_registered"),
        "{again}"
    );
    let (s, bad) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(&token),
            Some(json!({"domain": "co.uk"})),
        )
        .await;
    assert_eq!(
        (s, code(&bad)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain"),
        "{bad}"
    );
    let (s, bad) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(&token),
            Some(json!({"nope": 1})),
        )
        .await;
    assert_eq!(
        (s, code(&bad)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{bad}"
    );

    // Records appear, hosts relative to the zone.
    let d = wait_domain(&api, &token, &id, "records", |d| {
        d["status"] == "awaiting_dns" && !d["records"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(d["badge"], "waiting_for_dns");
    assert!(d["next_check_at"].is_string(), "{d}");
    let records = d["records"].as_array().unwrap().clone();
    for r in &records {
        let (name, host) = (r["name"].as_str().unwrap(), r["host"].as_str().unwrap());
        if name == domain {
            assert_eq!(host, "@");
        } else {
            assert_eq!(format!("{host}.{domain}"), name);
        }
    }
    assert!(records.iter().any(|r| r["host"] == "send"), "{records:?}");

    // Another tenant: not found, everywhere.
    for (m, p) in [
        (Method::GET, format!("/api/v1/domains/{id}")),
        (Method::POST, format!("/api/v1/domains/{id}/dns-configured")),
        (Method::POST, format!("/api/v1/domains/{id}/refresh")),
        (Method::DELETE, format!("/api/v1/domains/{id}")),
        (Method::GET, format!("/api/v1/domains/{id}/timeline")),
        (Method::POST, format!("/api/v1/domains/{id}/share")),
        (Method::DELETE, format!("/api/v1/domains/{id}/share")),
        (Method::GET, format!("/api/v1/domains/{id}/records.csv")),
        (Method::GET, format!("/api/v1/domains/{id}/records.zone")),
    ] {
        let (s, v) = api.json(m.clone(), &p, Some(&other_token), None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{m} {p}: {v}"
        );
    }
    let (_, list) = api
        .json(Method::GET, "/api/v1/domains", Some(&other_token), None)
        .await;
    assert_eq!(list["domains"], json!([]));
    // Another tenant registering the same name is refused as taken.
    let (s, taken) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(&other_token),
            Some(json!({"domain": domain})),
        )
        .await;
    assert_eq!(
        (s, code(&taken)),
        (StatusCode::CONFLICT, "domain_taken"),
        "{taken}"
    );

    // Tokens: expired, tampered, missing, signed with another secret → 401.
    let expired = gw.token(tenant, "enterprise", -5);
    let lives_too_long = gw.token(tenant, "enterprise", 2 * 86_400);
    let (body, sig) = token.split_once('.').unwrap();
    let forged_claims = gw.token(other, "enterprise", 600);
    let tampered = format!("{}.{sig}", forged_claims.split('.').next().unwrap());
    let mut flipped = sig.to_string();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    let bad_sig = format!("{body}.{flipped}");
    let foreign = gateway::Keys::new("another-secret").sign(&gateway::Claims {
        tenant_id: tenant,
        edition: "enterprise".into(),
        exp: chrono::Utc::now().timestamp() + 600,
        sub: None,
    });
    for (what, t) in [
        ("expired", Some(expired.as_str())),
        ("valid for more than a day", Some(&lives_too_long)),
        ("tampered", Some(&tampered)),
        ("bad signature", Some(&bad_sig)),
        ("foreign", Some(&foreign)),
        ("none", None),
    ] {
        for p in [
            "/api/v1/domains".to_string(),
            format!("/api/v1/domains/{id}"),
        ] {
            let (s, v) = api.json(Method::GET, &p, t, None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} {p}: {v}");
            assert!(
                code(&v) == "unauthorized" || code(&v) == "token_expired",
                "{v}"
            );
        }
    }
    let (_, v) = api
        .json(Method::GET, "/api/v1/domains", Some(&expired), None)
        .await;
    assert_eq!(code(&v), "token_expired");

    // An edition without managed sending: 403 with the plan message, on every route.
    let community = gw.token(tenant, "community", 600);
    for (m, p) in [
        (Method::GET, "/api/v1/session".to_string()),
        (Method::GET, "/api/v1/domains".to_string()),
        (Method::POST, "/api/v1/domains".to_string()),
        (Method::GET, format!("/api/v1/domains/{id}")),
        (Method::POST, format!("/api/v1/domains/{id}/refresh")),
        (Method::POST, format!("/api/v1/domains/{id}/share")),
        (Method::DELETE, format!("/api/v1/domains/{id}/share")),
    ] {
        let (s, v) = api
            .json(
                m.clone(),
                &p,
                Some(&community),
                Some(json!({"domain": "x.test"})),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "plan_not_available"),
            "{m} {p}: {v}"
        );
        assert_eq!(v["error"]["message"], gateway::PLAN_MESSAGE);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not available on your plan"));
    }

    // The owner adds the records at the DNS host and says so: verified.
    let row = gw.stack.wait_status(tenant, domain, "awaiting_dns").await;
    gw.stack.publish_records(domain, &row);
    let (s, v) = api
        .json(
            Method::POST,
            &format!("/api/v1/domains/{id}/dns-configured"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["outcome"], "accepted");
    let d = wait_domain(&api, &token, &id, "verified", |d| d["status"] == "verified").await;
    assert_eq!(d["badge"], "verified");
    assert!(d["verified_at"].is_string());
    assert!(
        d["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["required"] == true)
            .all(|r| r["dns_status"] == "found"),
        "{d}"
    );
    let (_, list) = api
        .json(Method::GET, "/api/v1/domains", Some(&token), None)
        .await;
    assert_eq!(list["domains"].as_array().unwrap().len(), 1);
    // The sender follows from tenant_email_settings.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, session) = api
            .json(Method::GET, "/api/v1/session", Some(&token), None)
            .await;
        if session["sender"]["from"] == format!("notifications@{domain}") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sender never became the domain: {session}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Timeline from the event log.
    let (s, tl) = api
        .json(
            Method::GET,
            &format!("/api/v1/domains/{id}/timeline"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let kinds: Vec<&str> = tl["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"dns_checked")
            && kinds.contains(&"verified")
            && kinds.contains(&"registered"),
        "{kinds:?}"
    );
    assert!(tl["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["at"].is_string()));

    // Check again.
    let (s, v) = api
        .json(
            Method::POST,
            &format!("/api/v1/domains/{id}/refresh"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    // Downloads for the owner hold every record.
    let d = wait_domain(&api, &token, &id, "verified", |d| d["status"] == "verified").await;
    let records = d["records"].as_array().unwrap().clone();
    let (s, csv) = api
        .call(
            Method::GET,
            &format!("/api/v1/domains/{id}/records.csv"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, zone) = api
        .call(
            Method::GET,
            &format!("/api/v1/domains/{id}/records.zone"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_downloads_hold_every_record(&csv, &zone, &records);
    assert!(zone.contains(&format!("$ORIGIN {domain}.")));

    // Share link: no token needed, same verdicts; CSV and zone through it too.
    let (s, share) = api
        .json(
            Method::POST,
            &format!("/api/v1/domains/{id}/share"),
            Some(&token),
            Some(json!({"ttl_secs": 600})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{share}");
    for bad in ["{", "[1]", "{\"ttl_secs\": \"soon\"}"] {
        let (s, v) = api
            .call_raw(
                Method::POST,
                &format!("/api/v1/domains/{id}/share"),
                Some(&token),
                Some(("application/json", bad.to_string())),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v.contains("invalid_request"), "{v}");
    }
    let (s, v) = api
        .call_raw(
            Method::POST,
            &format!("/api/v1/domains/{id}/share"),
            Some(&token),
            Some(("application/json", String::new())),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "an empty body is the default lifetime: {v}"
    );
    let url = share["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&gw.base), "{url}");
    let (s, page) = api.call(Method::GET, &url, None, None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("DNS records to add"));
    let query = url.split_once('?').unwrap().1.to_string();
    let (s, shared) = api
        .json(
            Method::GET,
            &format!("/api/v1/share/{id}?{query}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{shared}");
    let verdicts = |rs: &Value| {
        rs.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].clone(),
                    r["type"].clone(),
                    r["dns_status"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        verdicts(&shared["domain"]["records"]),
        verdicts(&d["records"])
    );
    assert_eq!(shared["domain"]["badge"], "verified");
    let (s, csv) = api
        .call(Method::GET, share["csv_url"].as_str().unwrap(), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, zone) = api
        .call(Method::GET, share["zone_url"].as_str().unwrap(), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_downloads_hold_every_record(&csv, &zone, &records);

    // Tampered and expired links are refused (page, JSON, downloads).
    let exp: i64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("exp="))
        .unwrap()
        .parse()
        .unwrap();
    let sig = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .unwrap()
        .to_string();
    let mut bad = sig.clone();
    let c = bad.pop().unwrap();
    bad.push(if c == '0' { '1' } else { '0' });
    let past = chrono::Utc::now().timestamp() - 10;
    let expired_sig = gw.keys.share_sig(Uuid::parse_str(&id).unwrap(), past);
    let other_domain = Uuid::new_v4();
    for (what, path, want) in [
        (
            "tampered sig",
            format!("{id}?exp={exp}&sig={bad}"),
            StatusCode::FORBIDDEN,
        ),
        (
            "longer expiry",
            format!("{id}?exp={}&sig={sig}", exp + 86_400),
            StatusCode::FORBIDDEN,
        ),
        (
            "another domain",
            format!("{other_domain}?exp={exp}&sig={sig}"),
            StatusCode::FORBIDDEN,
        ),
        ("no signature", id.clone(), StatusCode::FORBIDDEN),
        (
            "garbled expiry",
            format!("{id}?exp=soon&sig={sig}"),
            StatusCode::FORBIDDEN,
        ),
        (
            "garbled epoch",
            format!("{id}?exp={exp}&ep=x&sig={sig}"),
            StatusCode::FORBIDDEN,
        ),
        (
            "expired",
            format!("{id}?exp={past}&sig={expired_sig}"),
            StatusCode::GONE,
        ),
    ] {
        let (s, page) = api
            .call(Method::GET, &format!("/share/{path}"), None, None)
            .await;
        assert_eq!(s, want, "page, {what}: {page}");
        assert!(!page.contains("DNS records to add"), "{what}");
        let (s, v) = api
            .json(Method::GET, &format!("/api/v1/share/{path}"), None, None)
            .await;
        assert_eq!(s, want, "api, {what}: {v}");
        assert!(v.get("domain").is_none());
        let (file_path, q) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let (s, _) = api
            .call(
                Method::GET,
                &format!("/api/v1/share/{file_path}/records.csv?{q}"),
                None,
                None,
            )
            .await;
        assert_eq!(s, want, "csv, {what}");
    }

    // Every route the router serves answers (none falls through to "no such route").
    for (m, p) in gateway::ROUTES {
        if *m == "delete" {
            continue; // exercised below
        }
        let path = p.replace("{id}", &id);
        let path = if path.starts_with("/share/") || path.starts_with("/api/v1/share/") {
            format!("{path}?{query}")
        } else {
            path
        };
        let (s, body) = api
            .call(
                Method::from_bytes(m.to_uppercase().as_bytes()).unwrap(),
                &path,
                Some(&token),
                None,
            )
            .await;
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED
                && !body.starts_with(r#"{"error":{"code":"no_such_route""#),
            "{m} {p}: {s} {body}"
        );
        assert!(
            s.is_success() || (*p == "/api/v1/domains" && s == StatusCode::BAD_REQUEST),
            "{m} {p}: {s} {body}"
        );
    }

    // Revoking: every link made so far is refused like an expired one (410,
    // `link_revoked`); a link made afterwards carries the new epoch and works; the
    // epoch lives in NATS KV, so another gateway instance refuses the same links.
    let revoke = format!("/api/v1/domains/{id}/share");
    let (s, v) = api.json(Method::DELETE, &revoke, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = api
        .call(
            Method::GET,
            &format!("/api/v1/share/{id}?{query}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the link works before it is revoked");
    let (s, v) = api.json(Method::DELETE, &revoke, Some(&token), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revoked"], true);
    let revoked_urls = |q: &str| {
        [
            format!("/share/{id}?{q}"),
            format!("/api/v1/share/{id}?{q}"),
            format!("/api/v1/share/{id}/records.csv?{q}"),
            format!("/api/v1/share/{id}/records.zone?{q}"),
        ]
    };
    for p in revoked_urls(&query) {
        let (s, body) = api.call(Method::GET, &p, None, None).await;
        assert_eq!(s, StatusCode::GONE, "revoked {p}: {body}");
        assert!(
            body.contains("link_revoked") || body.contains("withdrawn this link"),
            "{p}: {body}"
        );
        assert!(!body.contains("DNS records to add"), "{p}");
    }
    let q1 = new_link(&api, &revoke, &token).await;
    assert!(q1.contains("&ep=1&"), "{q1}");
    for p in revoked_urls(&q1) {
        let (s, body) = api.call(Method::GET, &p, None, None).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "a link made after revoking works: {p}: {body}"
        );
    }
    // The epoch is signed: moving it forward, back or away is tampering.
    for forged in [
        q1.replace("ep=1", "ep=2"),
        q1.replace("ep=1&", ""),
        q1.replace("ep=1", "ep=0"),
    ] {
        let (s, v) = api
            .json(
                Method::GET,
                &format!("/api/v1/share/{id}?{forged}"),
                None,
                None,
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "invalid_link"),
            "{forged}: {v}"
        );
    }
    let (s, _) = api.json(Method::DELETE, &revoke, Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    let q2 = new_link(&api, &revoke, &token).await;
    assert!(q2.contains("&ep=2&"), "{q2}");
    let (other_base, other_gw) = gw.another_instance().await;
    for (q, want) in [
        (&query, StatusCode::GONE),
        (&q1, StatusCode::GONE),
        (&q2, StatusCode::OK),
    ] {
        for base in [&gw.base, &other_base] {
            let (s, body) = api
                .call(
                    Method::GET,
                    &format!("{base}/api/v1/share/{id}?{q}"),
                    None,
                    None,
                )
                .await;
            assert_eq!(s, want, "{base} {q}: {body}");
        }
    }
    other_gw.trigger();

    // Delete: removed, and no more commands on it.
    let (s, v) = api
        .json(
            Method::DELETE,
            &format!("/api/v1/domains/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = wait_domain(&api, &token, &id, "removed", |d| d["badge"] == "removed").await;
    assert_eq!(d["status"], "deactivated");
    let (s, _) = api
        .json(
            Method::POST,
            &format!("/api/v1/domains/{id}/refresh"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // No body names the provider. Records are shown verbatim (the owner must enter them
    // exactly), and the provider's DKIM selector is part of a record's name; so take
    // the records' own names and values out before looking.
    let verbatim: Vec<String> = records
        .iter()
        .flat_map(|r| {
            [
                r["name"].as_str().unwrap().to_string(),
                r["value"].as_str().unwrap().to_string(),
                r["host"].as_str().unwrap().to_string(),
            ]
        })
        .collect();
    let (checked, json_checked) = *api.checked.lock().unwrap();
    eprintln!(
        "{checked} responses checked against openapi.yaml ({json_checked} JSON bodies validated)"
    );
    assert!(
        checked > 60 && json_checked > 40,
        "{checked} / {json_checked}"
    );
    let seen = std::mem::take(&mut api.seen.lock().unwrap().0);
    assert!(seen.len() > 60, "{}", seen.len());
    for (what, body) in &seen {
        let mut text = body.clone();
        let mut sorted = verbatim.clone();
        sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for v in &sorted {
            text = text.replace(v.as_str(), "");
        }
        assert!(
            !text.to_ascii_lowercase().contains("resend"),
            "{what} names the provider: {body}"
        );
    }
    for asset in [
        gateway::INDEX_HTML,
        gateway::SHARE_HTML,
        gateway::APP_JS,
        gateway::APP_CSS,
    ] {
        assert!(!asset.to_ascii_lowercase().contains("resend"));
    }
    eprintln!("api flow took {:?}", started.elapsed());
    gw.stop().await;
}

/// Every view of the share link `q` (page, JSON, downloads) answers `want`.
async fn expect_links(api: &Api<'_>, id: &str, q: &str, want: StatusCode, what: &str) {
    for p in [
        format!("/share/{id}?{q}"),
        format!("/api/v1/share/{id}?{q}"),
        format!("/api/v1/share/{id}/records.csv?{q}"),
        format!("/api/v1/share/{id}/records.zone?{q}"),
    ] {
        let (s, body) = api.call(Method::GET, &p, None, None).await;
        assert_eq!(s, want, "{what}: {p}: {body}");
    }
}

/// A share link stops working when its domain is deleted, and when the domain's
/// share epoch cannot be read or went back (fail closed, never "epoch 0").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn share_links_close_with_their_domain_and_when_the_epoch_is_in_doubt() {
    let gw = Gw::start().await;
    let api = Api::new(&gw);
    let tenant = Uuid::new_v4();
    let token = gw.token(tenant, "enterprise", 600);
    let (s, reg) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(&token),
            Some(json!({"domain": "gw-share-close.test"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let id = reg["domain"]["id"].as_str().unwrap().to_string();
    let share = format!("/api/v1/domains/{id}/share");
    let q0 = new_link(&api, &share, &token).await;
    expect_links(&api, &id, &q0, StatusCode::OK, "a fresh link").await;

    // An unreadable epoch refuses the links, making new ones and revoking: 503.
    let kv = gw
        .stack
        .js
        .get_key_value(gateway::SHARE_EPOCHS_BUCKET)
        .await
        .unwrap();
    kv.put(&id, "garbled".into()).await.unwrap();
    expect_links(
        &api,
        &id,
        &q0,
        StatusCode::SERVICE_UNAVAILABLE,
        "unreadable epoch",
    )
    .await;
    for m in [Method::POST, Method::DELETE] {
        let (s, v) = api.json(m.clone(), &share, Some(&token), None).await;
        assert_eq!(
            s,
            StatusCode::SERVICE_UNAVAILABLE,
            "{m} with an unreadable epoch: {v}"
        );
    }
    kv.put(&id, "0".into()).await.unwrap();
    expect_links(&api, &id, &q0, StatusCode::OK, "the epoch readable again").await;

    // A link of an epoch the store no longer has (it went back) is refused.
    kv.put(&id, "7".into()).await.unwrap();
    let q7 = new_link(&api, &share, &token).await;
    assert!(q7.contains("&ep=7&"), "{q7}");
    expect_links(&api, &id, &q7, StatusCode::OK, "a link of epoch 7").await;
    kv.put(&id, "3".into()).await.unwrap();
    expect_links(&api, &id, &q7, StatusCode::GONE, "the epoch went back").await;
    kv.put(&id, "7".into()).await.unwrap();

    // Deleted: the links close, and no new one is made.
    let (s, v) = api
        .json(
            Method::DELETE,
            &format!("/api/v1/domains/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_domain(&api, &token, &id, "removed", |d| {
        d["status"] == "deactivated"
    })
    .await;
    expect_links(&api, &id, &q7, StatusCode::GONE, "the domain was deleted").await;
    let (s, v) = api
        .json(Method::GET, &format!("/api/v1/share/{id}?{q7}"), None, None)
        .await;
    assert_eq!(code(&v), "link_revoked", "{s} {v}");
    let (s, v) = api.json(Method::POST, &share, Some(&token), None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"), "{v}");
    gw.stop().await;
}

/// The spec check is a real check: well-formed bodies pass, and each kind of wrong
/// body, status or content type fails (negative controls; no stack needed).
#[test]
fn the_openapi_check_rejects_what_the_spec_does_not_allow() {
    let spec = Spec::gateway();
    let compiled = spec.compile_all().unwrap();
    assert!(compiled > 50, "{compiled} JSON response schemas");
    let id = "0b4e1d53-5b7e-4d0c-9d57-7f6a2b3c4d5e";
    let record = |diagnosis: Value, priority: Value| {
        json!({"purpose": "spf", "type": "MX", "host": "send", "name": "send.acme.com",
               "value": "feedback-smtp.example.net", "priority": priority, "required": true,
               "dns_status": "mismatch", "dns_status_label": "Needs a fix", "observed": ["x"],
               "diagnosis": diagnosis})
    };
    let domain = json!({"id": id, "domain": "acme.com", "domain_unicode": "acme.com", "status": "awaiting_dns", "badge": "waiting_for_dns",
        "badge_label": "Waiting for DNS", "next_step": "Add the records", "next_check_at": "2025-01-02T03:04:05Z",
        "last_checked_at": null, "verified_at": null, "created_at": "2025-01-01T00:00:00Z", "updated_at": null,
        "failure_reason": null, "notes": [],
        "records": [record(json!(null), json!(10)),
                    record(json!({"code": "value_mismatch", "message": "change it", "record": "send.acme.com",
                                  "host": "send", "observed": ["x"]}), json!(null))]});
    let get = |path: &str, status: u16, ct: Option<&str>, body: &Value| {
        spec.check("GET", path, status, ct, &body.to_string())
    };
    let json_ct = Some("application/json");
    let with = |pointer: &str, v: Value| {
        let mut d = json!({"domain": domain.clone()});
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = d.pointer_mut(parent).unwrap();
        match parent {
            Value::Array(a) => a[key.parse::<usize>().unwrap()] = v,
            Value::Object(m) => {
                m.insert(key.to_string(), v);
            }
            _ => unreachable!(),
        }
        d
    };
    let without = |field: &str| {
        let mut d = json!({"domain": domain.clone()});
        d["domain"].as_object_mut().unwrap().remove(field);
        d
    };
    let one = format!("/api/v1/domains/{id}");

    // Good bodies pass (nullable fields null or set, the allOf-nullable diagnosis both ways).
    get(&one, 200, json_ct, &json!({"domain": domain})).unwrap();
    get(
        &format!("http://127.0.0.1:1{one}?x=1"),
        200,
        Some("application/json; charset=utf-8"),
        &json!({"domain": domain}),
    )
    .unwrap();
    let error = json!({"error": {"code": "unauthorized", "message": "sign in"}});
    get("/api/v1/domains", 401, json_ct, &error).unwrap();
    spec.check(
        "GET",
        &format!("/api/v1/domains/{id}/records.csv"),
        200,
        Some("text/csv; charset=utf-8"),
        "type,host\r\n",
    )
    .unwrap();

    // Each of these is wrong, and the check says where.
    let wrong: Vec<(&str, &str, Result<(), String>)> = vec![
        (
            "a required field missing",
            "\"records\" is a required property",
            get(&one, 200, json_ct, &without("records")),
        ),
        (
            "a wrong type",
            "at \"/domain/records/0/priority\"",
            get(
                &one,
                200,
                json_ct,
                &with("/domain/records/0/priority", json!("10")),
            ),
        ),
        (
            "null where not nullable",
            "at \"/domain/badge\": null is not of type",
            get(&one, 200, json_ct, &with("/domain/badge", json!(null))),
        ),
        (
            "a value outside the enum",
            "at \"/domain/status\"",
            get(
                &one,
                200,
                json_ct,
                &with("/domain/status", json!("provisioning")),
            ),
        ),
        (
            "a bad uuid",
            "is not a \"uuid\"",
            get(&one, 200, json_ct, &with("/domain/id", json!("not-a-uuid"))),
        ),
        (
            "a bad date-time",
            "is not a \"date-time\"",
            get(
                &one,
                200,
                json_ct,
                &with("/domain/verified_at", json!("yesterday")),
            ),
        ),
        (
            "a bad diagnosis",
            "at \"/domain/records/1/diagnosis\"",
            get(
                &one,
                200,
                json_ct,
                &with(
                    "/domain/records/1/diagnosis",
                    json!({"code": "nope", "message": "x"}),
                ),
            ),
        ),
        (
            "an undescribed field",
            "'provider' was unexpected",
            get(
                &one,
                200,
                json_ct,
                &with("/domain/provider", json!("someone")),
            ),
        ),
        (
            "an error code outside the enum",
            "at \"/error/code\"",
            get(
                "/api/v1/domains",
                401,
                json_ct,
                &json!({"error": {"code": "oops", "message": "x"}}),
            ),
        ),
        (
            "an error without a message",
            "\"message\" is a required property",
            get(
                "/api/v1/domains",
                401,
                json_ct,
                &json!({"error": {"code": "unauthorized"}}),
            ),
        ),
        (
            "an undescribed status",
            "status 500 is not described",
            get(&one, 500, json_ct, &error),
        ),
        (
            "an undescribed content type",
            "text/plain is not described",
            get("/api/v1/domains", 401, Some("text/plain"), &error),
        ),
        (
            "no content type",
            "no Content-Type",
            get("/api/v1/domains", 401, None, &error),
        ),
        (
            "JSON that is not JSON",
            "the body is not JSON",
            spec.check("GET", "/api/v1/domains", 401, json_ct, "Unauthorized"),
        ),
        (
            "an undescribed method",
            "the spec has no PUT",
            spec.check("PUT", &one, 200, json_ct, "{}"),
        ),
        (
            "an undescribed path",
            "the spec has no path",
            spec.check("GET", "/api/v1/nothing", 200, json_ct, "{}"),
        ),
    ];
    for (what, expected, r) in wrong {
        let e = r.expect_err(what);
        eprintln!("{what}: {e}");
        assert!(e.contains(expected), "{what}: expected {expected:?} in {e}");
    }
    // The undescribed field is caught by strictness alone.
    Spec::from_yaml(gateway::OPENAPI_YAML, false)
        .check(
            "GET",
            &one,
            200,
            json_ct,
            &with("/domain/provider", json!("someone")).to_string(),
        )
        .unwrap();
}

/// Registers `domain` for the token's tenant and waits for its records; returns its id.
async fn registered(api: &Api<'_>, token: &str, domain: &str) -> String {
    let (s, reg) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(token),
            Some(json!({ "domain": domain })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{domain}: {reg}");
    let id = reg["domain"]["id"].as_str().unwrap().to_string();
    wait_domain(api, token, &id, "records", |d| {
        d["status"] == "awaiting_dns"
    })
    .await;
    id
}

/// A tenant over its commands' limit, and a domain checked again at once, are
/// answered 429 with `Retry-After` and the gateway's error body, and nothing is
/// published; another tenant, and another domain, are not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_over_a_rate_limit_are_answered_429_with_retry_after() {
    // Given a tenant with 4 commands at once, then one a minute, and a check of a
    // domain at most once an hour
    let gw = Gw::start_with(|o| {
        o.tenant_commands = gateway::limits::Rate::per_minute(1, 4);
        o.domain_checks = gateway::limits::Rate::every_secs(3600, 1);
    })
    .await;
    let api = Api::new(&gw);
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    let token = gw.token(tenant, "enterprise", 600);
    let other_token = gw.token(other, "enterprise", 600);
    let one = registered(&api, &token, "gw-limit-one.test").await; // 1 of 4
    let two = registered(&api, &token, "gw-limit-two.test").await; // 2 of 4
    let refresh = |id: &str| format!("/api/v1/domains/{id}/refresh");

    // When one domain is checked twice in a row
    let (s, v) = api
        .json(Method::POST, &refresh(&one), Some(&token), None)
        .await; // 3 of 4
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) = api
        .json(Method::POST, &refresh(&one), Some(&token), None)
        .await;
    // Then the second is refused for an hour's wait, in the gateway's error shape
    assert_rate_limited(s, &v);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("checked"),
        "{v}"
    );
    let wait = retry_after(&api).expect("a 429 carries Retry-After");
    assert!((3500..=3600).contains(&wait), "Retry-After: {wait}");
    // And so is "I've added the records" on it: both are checks
    let (s, v) = api
        .json(
            Method::POST,
            &format!("/api/v1/domains/{one}/dns-configured"),
            Some(&token),
            None,
        )
        .await;
    assert_rate_limited(s, &v);
    // And the refused checks cost the tenant nothing: another domain is checked
    let (s, v) = api
        .json(Method::POST, &refresh(&two), Some(&token), None)
        .await; // 4 of 4
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    // When the tenant, out of commands, registers another domain
    let (s, v) = api
        .json(
            Method::POST,
            "/api/v1/domains",
            Some(&token),
            Some(json!({"domain": "gw-limit-three.test"})),
        )
        .await;
    // Then it is refused until a token refills (within the minute)
    assert_rate_limited(s, &v);
    let wait = retry_after(&api).expect("a 429 carries Retry-After");
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    // And deleting is a command too
    let (s, v) = api
        .json(
            Method::DELETE,
            &format!("/api/v1/domains/{two}"),
            Some(&token),
            None,
        )
        .await;
    assert_rate_limited(s, &v);
    // And reading is not limited
    let (s, _) = api
        .json(Method::GET, "/api/v1/domains", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // And another tenant is not held back
    registered(&api, &other_token, "gw-limit-three.test").await;

    // And nothing refused reached the log: no event names the refused domain or was
    // appended for the first domain after its refused checks (its one check aside)
    gw.stack.settled().await;
    let events = gw.stack.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.domain == "gw-limit-three.test" && e.tenant_id.0 == tenant),
        "a refused registration was published"
    );
    // (a check's events carry the command that asked for it as their cause)
    let one_id = Uuid::parse_str(&one).unwrap();
    let owners_checks: std::collections::BTreeSet<_> = events
        .iter()
        .filter(|e| e.domain_id.0 == one_id)
        .filter(|e| match &e.data {
            EventData::CheckRequested { trigger } | EventData::DnsChecked { trigger, .. } => {
                *trigger != CheckTrigger::Scheduled
            }
            _ => false,
        })
        .map(|e| e.causation_id)
        .collect();
    assert_eq!(owners_checks.len(), 1, "{owners_checks:?}");
    gw.stop().await;
}

/// The timeline answers at most a page of the newest events, older pages through
/// `before`, and only what happened since through `after` (what the page polls).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_timeline_answers_a_page_of_the_newest_events_and_older_pages_on_request() {
    // Given a gateway answering 3 events a page, and a domain with more events than that
    let gw = Gw::start_with(|o| {
        o.timeline_page = 3;
        o.domain_checks = gateway::limits::Rate::every_secs(1, 10);
    })
    .await;
    let api = Api::new(&gw);
    let token = gw.token(Uuid::new_v4(), "enterprise", 600);
    let id = registered(&api, &token, "gw-timeline.test").await;
    let timeline = format!("/api/v1/domains/{id}/timeline");
    for _ in 0..3 {
        let (s, v) = api
            .json(
                Method::POST,
                &format!("/api/v1/domains/{id}/refresh"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    // (a gateway with the default page of 100 answers the whole timeline)
    let (whole_base, whole_gw) = gw.another_instance().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let whole = loop {
        let (s, whole) = api
            .json(
                Method::GET,
                &format!("{whole_base}{timeline}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{whole}");
        if whole["entries"].as_array().unwrap().len() >= 6 {
            break whole;
        }
        assert!(Instant::now() < deadline, "too few events: {whole}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(whole["older"], Value::Null, "{whole}");
    let latest = whole["latest"].as_u64().unwrap();

    // When the owner's page asks
    let (s, page) = api.json(Method::GET, &timeline, Some(&token), None).await;
    // Then it gets the newest 3, and where to ask for older ones
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["entries"].as_array().unwrap().len(), 3, "{page}");
    assert!(page["older"].as_u64().is_some(), "{page}");
    assert!(page["latest"].as_u64().unwrap() >= latest, "{page}");

    // When it pages back from the whole answer's newest event
    // Then the pages together are the whole timeline, newest first
    let mut paged: Vec<Value> = Vec::new();
    let mut before = latest + 1;
    for _ in 0..20 {
        let (s, page) = api
            .json(
                Method::GET,
                &format!("{timeline}?before={before}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 3, "{page}");
        paged.extend(entries.iter().cloned());
        match page["older"].as_u64() {
            Some(older) => {
                assert!(older < before, "{page}");
                before = older;
            }
            None => break,
        }
    }
    assert_eq!(&paged, whole["entries"].as_array().unwrap());

    // When it asks what happened since its latest, then checks again
    let (_, page) = api.json(Method::GET, &timeline, Some(&token), None).await;
    let seen = page["latest"].as_u64().unwrap();
    let (s, since) = api
        .json(
            Method::GET,
            &format!("{timeline}?after={seen}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{since}");
    assert!(since["latest"].as_u64().unwrap() >= seen, "{since}");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the domain's next check token
    let (s, v) = api
        .json(
            Method::POST,
            &format!("/api/v1/domains/{id}/refresh"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // Then only the new events are answered
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, since) = api
            .json(
                Method::GET,
                &format!("{timeline}?after={seen}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{since}");
        let entries = since["entries"].as_array().unwrap();
        if entries.iter().any(|e| e["kind"] == "dns_checked") {
            assert!(since["latest"].as_u64().unwrap() > seen, "{since}");
            assert!(entries.len() <= 3, "{since}");
            assert!(
                !entries.iter().any(|e| e["kind"] == "registered"),
                "an old event answered as new: {since}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new check never showed: {since}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // And a cursor that is not a number is a bad request
    for q in ["before=x", "after=-1"] {
        let (s, v) = api
            .json(Method::GET, &format!("{timeline}?{q}"), Some(&token), None)
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{q}: {v}"
        );
    }
    whole_gw.trigger();
    gw.stop().await;
}
