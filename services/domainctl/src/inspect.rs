//! Read-only views: `history`, `state`, `domains`, `sender`.

use crate::connect::{self, Endpoints};
use crate::error::{self, CtlError, CtlResult};
use crate::{DomainRef, Io};
use chrono::{DateTime, Utc};
use email_domain_events::event::EventData;
use email_domain_events::{
    DnsStatus, DomainId, DomainName, DomainState, Event, ReservedDomains, Status, TenantId,
};
use runtime::names::NameIndex;
use runtime::store::EventStore;
use runtime::streams;
use serde_json::json;
use sqlx::{PgPool, Row as _};
use std::time::Duration;
use uuid::Uuid;

/// A clap value parser for `--status`.
pub fn parse_status(s: &str) -> Result<String, String> {
    Status::parse(s)
        .map(|s| s.as_str().to_string())
        .ok_or_else(|| {
            format!(
                "{s:?} is not a status; use one of {}",
                Status::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A clap value parser for durations such as `3d`, `12h`, `30m`, `45s`, `1w`, `1d12h`.
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("{s:?} is not a duration; write e.g. 3d, 12h, 30m, 45s or 1d12h");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0i64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        // A bare number means seconds.
        total += num.parse::<i64>().map_err(|_| bad())?;
    }
    Ok(chrono::Duration::seconds(total))
}

/// `3d 4h`, `12m`, `40s`: an age for people.
pub fn human_age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins) = (s / 86_400, (s % 86_400) / 3_600, (s % 3_600) / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m")
    } else {
        format!("{s}s")
    }
}

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// The name as the service stores it: lower case, no trailing dot, IDNs as A-labels.
pub fn normalise(domain: &str) -> String {
    match DomainName::parse(domain, &ReservedDomains::default()) {
        Ok(n) => n.as_str().to_string(),
        Err(_) => domain.trim().trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// A registration found for a tenant and name.
#[derive(Debug, Clone)]
pub struct Found {
    pub domain_id: DomainId,
    pub domain: String,
    /// Other registrations of the same name by the same tenant (older ones).
    pub others: Vec<(DomainId, String)>,
}

async fn optional_db(ep: &Endpoints, io: &mut Io) -> Option<PgPool> {
    match connect::db(&ep.database_url, 2).await {
        Ok(p) => Some(p),
        Err(e) => {
            io.note(format!(
                "note: {}; showing what NATS alone knows",
                e.message
            ));
            None
        }
    }
}

/// Finds the registration a `DomainRef` names: the current holder of the name if it
/// is this tenant's, or the newest of the tenant's rows in `email_domains`.
pub async fn resolve(
    js: &async_nats::jetstream::Context,
    store: &EventStore,
    db: Option<&PgPool>,
    d: &DomainRef,
) -> CtlResult<Found> {
    let tenant = TenantId(d.tenant);
    let name = d.domain.as_deref().map(normalise);
    if let Some(id) = d.domain_id {
        let loaded = store
            .load(tenant, DomainId(id))
            .await
            .map_err(|e| CtlError::unreachable(format!("{e:#}")))?;
        return match loaded.state {
            Some(s) if name.as_deref().is_none_or(|n| n == s.domain) => Ok(Found {
                domain_id: s.domain_id,
                domain: s.domain,
                others: Vec::new(),
            }),
            Some(s) => Err(CtlError::not_found(format!(
                "domain id {id} of tenant {tenant} is {}, not {}",
                s.domain,
                name.unwrap_or_default()
            ))),
            None => Err(CtlError::not_found(format!(
                "tenant {tenant} has no domain with id {id}"
            ))),
        };
    }
    let name = name.unwrap_or_default();
    let mut candidates: Vec<(DomainId, Option<DateTime<Utc>>, String)> = Vec::new();
    let mut holder = None;
    if let Ok(kv) = js.get_key_value(streams::NAMES_BUCKET).await {
        if let Ok(Some(claim)) = NameIndex::new(kv).get(&name).await {
            if claim.holder.tenant_id == tenant {
                holder = Some(claim.holder.domain_id);
                candidates.push((
                    claim.holder.domain_id,
                    None,
                    "current holder of the name".into(),
                ));
            }
        }
    }
    if let Some(db) = db {
        let rows = sqlx::query(
            "SELECT id, status, created_at FROM email_domains WHERE tenant = $1 AND domain_name = $2 ORDER BY created_at DESC",
        )
        .bind(tenant.0)
        .bind(&name)
        .fetch_all(db)
        .await;
        if let Ok(rows) = rows {
            for r in rows {
                let id = DomainId(r.get::<Uuid, _>("id"));
                let status: String = r.get("status");
                let created: Option<DateTime<Utc>> = r.get("created_at");
                if Some(id) != holder {
                    candidates.push((id, created, format!("{status}, registered {}", ts(created))));
                }
            }
        }
    }
    let Some((first, _, _)) = candidates.first().cloned() else {
        return Err(CtlError::not_found(format!(
            "tenant {tenant} has no registration of {name}{}",
            if db.is_none() {
                " that NATS knows of (Postgres was not reachable for older ones)"
            } else {
                ""
            }
        )));
    };
    Ok(Found {
        domain_id: first,
        domain: name,
        others: candidates
            .into_iter()
            .skip(1)
            .map(|(id, _, what)| (id, what))
            .collect(),
    })
}

fn note_others(io: &mut Io, f: &Found) {
    if !f.others.is_empty() {
        io.note(format!(
            "note: showing registration {}; the tenant has other registrations of {}:",
            f.domain_id, f.domain
        ));
        for (id, what) in &f.others {
            io.note(format!("  --domain-id {id}  ({what})"));
        }
    }
}

/// One line about an event's data.
pub fn summary(e: &Event) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    match &e.data {
        EventData::DomainRegistered {
            region,
            requested_by,
            deadline_at,
        } => {
            format!(
                "region={} by={} deadline={}",
                opt(region),
                opt(requested_by),
                ts(Some(*deadline_at))
            )
        }
        EventData::DomainProvisioned {
            provider_id,
            provider_domain_id,
            region,
            records,
            next_check_at,
            cleanup_required,
        } => {
            format!(
                "provider={provider_id} provider_domain_id={provider_domain_id} region={} records={} next_check={}{}",
                opt(region),
                records.len(),
                ts(*next_check_at),
                if *cleanup_required { " cleanup_required (deleted before the provider answered)" } else { "" }
            )
        }
        EventData::CheckRequested { trigger } => {
            format!("trigger={}", json!(trigger).as_str().unwrap_or(""))
        }
        EventData::ProvisioningFailed { reason } => format!("reason={reason:?}"),
        EventData::DnsChecked {
            trigger,
            records,
            all_required_found,
            request_verification,
            poll_provider,
            next_check_at,
            new_deadline_at,
            attempt,
            drift_detected,
            drift_resolved,
            ..
        } => {
            let found = records
                .iter()
                .filter(|r| r.dns_status == DnsStatus::Found)
                .count();
            let mut s = format!(
                "trigger={} found={found}/{} required_found={} verify={} poll={} next_check={} attempt={attempt}",
                json!(trigger).as_str().unwrap_or(""),
                records.len(),
                all_required_found,
                request_verification,
                poll_provider,
                ts(*next_check_at)
            );
            let bad: Vec<String> = records
                .iter()
                .filter(|r| r.dns_status != DnsStatus::Found)
                .map(|r| {
                    let status = json!(r.dns_status);
                    match &r.diagnosis {
                        Some(d) => format!(
                            "{}:{}({})",
                            r.purpose,
                            status.as_str().unwrap_or(""),
                            json!(d.code).as_str().unwrap_or("")
                        ),
                        None => format!("{}:{}", r.purpose, status.as_str().unwrap_or("")),
                    }
                })
                .collect();
            if !bad.is_empty() {
                s.push_str(&format!(" not_found=[{}]", bad.join(" ")));
            }
            if let Some(d) = new_deadline_at {
                s.push_str(&format!(" new_deadline={}", ts(Some(*d))));
            }
            if *drift_detected {
                s.push_str(" drift_detected");
            }
            if *drift_resolved {
                s.push_str(" drift_resolved");
            }
            s
        }
        EventData::ProviderPolled {
            provider_status,
            verified,
            activates,
            provider_failed,
            next_check_at,
            failed_records,
            ..
        } => {
            let mut s = format!(
                "provider_status={provider_status} verified={verified} activates={activates} provider_failed={provider_failed} next_check={}",
                ts(*next_check_at)
            );
            if !failed_records.is_empty() {
                let names: Vec<String> = failed_records
                    .iter()
                    .map(|r| format!("{}:{}", r.record_type, r.name))
                    .collect();
                s.push_str(&format!(" failed_records=[{}]", names.join(" ")));
            }
            s
        }
        EventData::ProviderDomainVanished {
            provider_domain_id,
            deadline_at,
            ..
        } => {
            format!(
                "gone={provider_domain_id} new_deadline={}",
                ts(Some(*deadline_at))
            )
        }
        EventData::VerificationFailed {
            reason,
            records,
            by_operator,
        } => {
            format!(
                "reason={reason:?} by_operator={by_operator} records={}",
                records.len()
            )
        }
        EventData::WindowReopened { deadline_at } => format!("deadline={}", ts(Some(*deadline_at))),
        EventData::DomainDeleted {
            requested_by,
            cleanup_required,
            ..
        } => {
            format!(
                "by={} cleanup_required={cleanup_required}",
                opt(requested_by)
            )
        }
        EventData::DomainReleased {
            to_tenant,
            cleanup_required,
            ..
        } => {
            format!("to_tenant={to_tenant} cleanup_required={cleanup_required}")
        }
        EventData::ProviderCleanedUp {} => String::new(),
        EventData::PreflightChecked { warnings } => {
            if warnings.is_empty() {
                "no warnings".to_string()
            } else {
                warnings
                    .iter()
                    .map(|w| w.code.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
    }
}

async fn open_store(ep: &Endpoints) -> CtlResult<(async_nats::jetstream::Context, EventStore)> {
    let client = connect::nats(&ep.nats_url).await?;
    let js = connect::jetstream(client, &ep.nats_url).await?;
    let store = EventStore::open(&js, 16).await.map_err(|e| {
        CtlError::unreachable(format!(
            "cannot open the event store on {}: {e:#}",
            ep.nats_url
        ))
    })?;
    Ok((js, store))
}

pub async fn history(ep: &Endpoints, io: &mut Io, d: &DomainRef) -> CtlResult<i32> {
    let (js, store) = open_store(ep).await?;
    let db = optional_db(ep, io).await;
    let found = resolve(&js, &store, db.as_ref(), d).await?;
    note_others(io, &found);
    let events = store
        .history(TenantId(d.tenant), found.domain_id)
        .await
        .map_err(|e| CtlError::negative(format!("cannot read the history: {e:#}")))?;
    if events.is_empty() {
        return Err(CtlError::not_found(format!(
            "domain {} of tenant {} has no events",
            found.domain_id, d.tenant
        )));
    }
    if io.json {
        let arr: Vec<serde_json::Value> = events
            .iter()
            .map(|(_, e)| serde_json::to_value(e).unwrap_or_default())
            .collect();
        io.json_value(&serde_json::Value::Array(arr));
        return Ok(error::OK);
    }
    io.line(format!(
        "{} (domain {}, tenant {}): {} events",
        found.domain,
        found.domain_id,
        d.tenant,
        events.len()
    ));
    io.line(format!(
        "{:<4} {:<20} {:<20} {:<36} {}",
        "VER", "TYPE", "OCCURRED_AT", "CAUSATION_ID", "SUMMARY"
    ));
    for (_, e) in &events {
        io.line(format!(
            "{:<4} {:<20} {:<20} {:<36} {}",
            e.version,
            e.data.type_name(),
            ts(Some(e.occurred_at)),
            e.causation_id,
            summary(e)
        ));
    }
    Ok(error::OK)
}

async fn timer_due(db: Option<&PgPool>, id: DomainId) -> Option<DateTime<Utc>> {
    let db = db?;
    sqlx::query_scalar::<_, DateTime<Utc>>(&format!(
        "SELECT due_at FROM {} WHERE domain_id = $1",
        scheduler::TIMERS
    ))
    .bind(id.0)
    .fetch_optional(db)
    .await
    .ok()
    .flatten()
}

pub async fn state(ep: &Endpoints, io: &mut Io, d: &DomainRef) -> CtlResult<i32> {
    let (js, store) = open_store(ep).await?;
    let db = optional_db(ep, io).await;
    let found = resolve(&js, &store, db.as_ref(), d).await?;
    note_others(io, &found);
    let loaded = store
        .load(TenantId(d.tenant), found.domain_id)
        .await
        .map_err(|e| CtlError::negative(format!("cannot read the events: {e:#}")))?;
    let Some(s) = loaded.state else {
        return Err(CtlError::not_found(format!(
            "domain {} of tenant {} has no events",
            found.domain_id, d.tenant
        )));
    };
    let due = timer_due(db.as_ref(), s.domain_id).await;
    if io.json {
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("next_check_at".into(), json!(s.next_check_at));
            m.insert("scheduler_due_at".into(), json!(due));
            m.insert("stream_seq".into(), json!(loaded.last_seq));
        }
        io.json_value(&v);
        return Ok(error::OK);
    }
    print_state(io, &s, due);
    Ok(error::OK)
}

fn print_state(io: &mut Io, s: &DomainState, due: Option<DateTime<Utc>>) {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    io.line(format!("domain          {}", s.domain));
    io.line(format!("domain id       {}", s.domain_id));
    io.line(format!("tenant          {}", s.tenant_id));
    io.line(format!(
        "status          {} (version {})",
        s.status.as_str(),
        s.version
    ));
    if let Some(r) = &s.failure_reason {
        io.line(format!("failure reason  {r}"));
    }
    if let Some(r) = &s.deactivation_reason {
        io.line(format!("deactivated     {r}"));
    }
    io.line(format!(
        "provider        {} / {} (provider status {})",
        opt(&s.provider_id),
        opt(&s.provider_domain_id),
        opt(&s.provider_status)
    ));
    io.line(format!("region          {}", opt(&s.region)));
    io.line(format!("requested by    {}", opt(&s.requested_by)));
    io.line(format!("created         {}", ts(Some(s.created_at))));
    io.line(format!("updated         {}", ts(Some(s.updated_at))));
    io.line(format!("verified at     {}", ts(s.verified_at)));
    io.line(format!("deadline        {}", ts(s.deadline_at)));
    io.line(format!("last DNS check  {}", ts(s.dns_last_checked_at)));
    io.line(format!(
        "next check      {}{}",
        ts(s.next_check_at),
        match due {
            Some(d) => format!(" (scheduler timer due {})", ts(Some(d))),
            None => String::new(),
        }
    ));
    io.line(format!("recheck attempt {}", s.attempt));
    if let Some(d) = s.drift_since {
        io.line(format!("drift since     {}", ts(Some(d))));
    }
    if s.check_requested {
        io.line("check requested yes (checked once provisioned)");
    }
    if s.cleanup_pending {
        io.line("provider clean-up pending");
    }
    io.line(format!("records         {}", s.records.len()));
    for r in &s.records {
        let status = json!(r.dns_status);
        let value = match r.priority {
            Some(p) => format!("{p} {}", r.value),
            None => r.value.clone(),
        };
        io.line(format!(
            "  {:<13} {:<12} {:<5} {} {} -> {}",
            status.as_str().unwrap_or(""),
            r.purpose,
            r.record_type,
            if r.required { "required" } else { "optional" },
            r.name,
            value
        ));
        for o in &r.observed {
            io.line(format!("      observed: {o}"));
        }
        if let Some(d) = &r.diagnosis {
            io.line(format!(
                "      {}: {}",
                json!(d.code).as_str().unwrap_or(""),
                d.message
            ));
        }
    }
}

pub async fn domains(
    ep: &Endpoints,
    io: &mut Io,
    tenant: Option<Uuid>,
    status: Option<String>,
    older_than: Option<chrono::Duration>,
    include_deactivated: bool,
    limit: i64,
) -> CtlResult<i32> {
    let db = connect::db(&ep.database_url, 2).await?;
    let now = Utc::now();
    let before = older_than.map(|d| now - d);
    let rows = sqlx::query(
        "SELECT id, tenant, domain_name, status, updated_at, created_at, next_check_at, failure_reason, version
         FROM email_domains
         WHERE ($1::uuid IS NULL OR tenant = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($2::text IS NOT NULL OR $3 OR status <> 'deactivated')
           AND ($4::timestamptz IS NULL OR updated_at < $4)
         ORDER BY updated_at ASC NULLS FIRST, id
         LIMIT $5",
    )
    .bind(tenant)
    .bind(&status)
    .bind(include_deactivated)
    .bind(before)
    .bind(limit.max(0))
    .fetch_all(&db)
    .await?;
    let mut list = Vec::new();
    for r in &rows {
        let updated: Option<DateTime<Utc>> = r.get("updated_at");
        list.push(json!({
            "id": r.get::<Uuid, _>("id"),
            "tenant": r.get::<Uuid, _>("tenant"),
            "domain_name": r.get::<String, _>("domain_name"),
            "status": r.get::<String, _>("status"),
            "updated_at": updated,
            "created_at": r.get::<Option<DateTime<Utc>>, _>("created_at"),
            "age_seconds": updated.map(|u| (now - u).num_seconds()),
            "next_check_at": r.get::<Option<DateTime<Utc>>, _>("next_check_at"),
            "failure_reason": r.get::<Option<String>, _>("failure_reason"),
            "version": r.get::<i64, _>("version"),
        }));
    }
    if io.json {
        io.json_value(&serde_json::Value::Array(list));
        return Ok(error::OK);
    }
    if list.is_empty() {
        io.line("no domains match");
        return Ok(error::OK);
    }
    io.line(format!(
        "{:<36} {:<36} {:<30} {:<12} {:<9} {:<20} {}",
        "TENANT", "DOMAIN_ID", "DOMAIN", "STATUS", "AGE", "NEXT_CHECK", "FAILURE_REASON"
    ));
    for (v, r) in list.iter().zip(&rows) {
        let updated: Option<DateTime<Utc>> = r.get("updated_at");
        io.line(format!(
            "{:<36} {:<36} {:<30} {:<12} {:<9} {:<20} {}",
            v["tenant"].as_str().unwrap_or(""),
            v["id"].as_str().unwrap_or(""),
            v["domain_name"].as_str().unwrap_or(""),
            v["status"].as_str().unwrap_or(""),
            updated
                .map(|u| human_age(now - u))
                .unwrap_or_else(|| "-".into()),
            ts(r.get("next_check_at")),
            v["failure_reason"].as_str().unwrap_or("")
        ));
    }
    io.note(format!("{} domains", list.len()));
    Ok(error::OK)
}

pub async fn sender(ep: &Endpoints, io: &mut Io, tenant: Uuid, timeout: f64) -> CtlResult<i32> {
    let client = connect::nats(&ep.nats_url).await?;
    let body = serde_json::to_vec(&json!({"tenant_id": tenant})).unwrap_or_default();
    let wait = Duration::from_secs_f64(timeout.max(0.1));
    let reply = match tokio::time::timeout(wait, client.request("email_domains.query.sender", body.into())).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            return Err(CtlError::unreachable(format!(
                "no answer on email_domains.query.sender at {}: {e}; is the query service running?",
                ep.nats_url
            )))
        }
        Err(_) => {
            return Err(CtlError::unreachable(format!(
                "no answer on email_domains.query.sender within {timeout} s; is the query service running?"
            )))
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| {
        CtlError::negative(format!(
            "the query service answered something that is not JSON: {e}"
        ))
    })?;
    if io.json {
        io.json_value(&v);
        return Ok(error::OK);
    }
    if let Some(err) = v.get("error") {
        io.line(format!("error from the query service: {err}"));
        return Ok(error::NEGATIVE);
    }
    io.line(format!("from     {}", v["from"].as_str().unwrap_or("?")));
    io.line(format!(
        "domain   {}",
        v["domain"].as_str().unwrap_or("- (the platform address)")
    ));
    io.line(format!("managed  {}", v["managed"]));
    Ok(error::OK)
}
