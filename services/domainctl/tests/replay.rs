mod common;

use chrono::Duration;
use common::*;
use email_domain_events::event::EventData;
use email_domain_events::records::DnsStatus;
use email_domain_events::{evolve, DomainId, Event, TenantId};
use projector::email_domains::Row;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// The rows the core computes from the events, independently of `replay`.
fn expected_rows(events: &[Event]) -> BTreeMap<DomainId, Row> {
    let mut states = HashMap::new();
    for e in events {
        let s = states.remove(&e.domain_id);
        if let Some(n) = evolve(s, e) {
            states.insert(e.domain_id, n);
        }
    }
    states
        .values()
        .map(|s| (s.domain_id, Row::from_state(s)))
        .collect()
}

async fn table_rows(pool: &sqlx::PgPool) -> BTreeMap<DomainId, Row> {
    let rows: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(d) FROM email_domains d")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|v| serde_json::from_value::<Row>(v).unwrap())
        .map(|r| (r.id, r))
        .collect()
}

async fn settings(
    pool: &sqlx::PgPool,
    t: TenantId,
) -> (
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
) {
    sqlx::query_as("SELECT default_from_domain, previous_from_domain, updated_at FROM tenant_email_settings WHERE tenant = $1")
        .bind(t.0)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn checkpoint(pool: &sqlx::PgPool, name: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT stream_seq, generation FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn index_names(pool: &sqlx::PgPool, table: &str) -> BTreeSet<String> {
    let v: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = $1")
            .bind(table)
            .fetch_all(pool)
            .await
            .unwrap();
    v.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_what_the_core_computes_and_swaps_it_in() {
    let nats = Nats::start().await;
    let (db, pool) = Db::create().await;
    let js = nats.js().await;
    let mut w = Writer::new(&js).await;
    let (a, b, c) = (
        TenantId(Uuid::new_v4()),
        TenantId(Uuid::new_v4()),
        TenantId(Uuid::new_v4()),
    );
    let t = t0();
    // Tenant a: a.test verified (default), then b.test verified (default, a previous),
    // then b.test deleted: the default rolls back to a.test.
    w.verified(a, "a.test", t, true).await;
    let b_id = w.verified(a, "b.test", t + Duration::hours(1), true).await;
    w.deleted(a, b_id, "b.test", t + Duration::hours(2)).await;
    // Tenant b: one created, one awaiting DNS, one deleted.
    w.registered(b, "c.test", t).await;
    let d = w.registered(b, "d.test", t + Duration::minutes(5)).await;
    w.append(
        b,
        d,
        "d.test",
        t + Duration::minutes(6),
        EventData::DomainProvisioned {
            provider_id: "resend".into(),
            provider_domain_id: "pd-d".into(),
            region: None,
            records: records("d.test", DnsStatus::Pending),
            next_check_at: Some(t + Duration::minutes(11)),
            cleanup_required: false,
        },
    )
    .await;
    let e = w.registered(b, "e.test", t).await;
    w.deleted(b, e, "e.test", t + Duration::minutes(1)).await;
    // Tenant c: verified without activation (drift recovery): no default.
    w.verified(c, "f.test", t, false).await;
    let last = w.all.len() as u64;

    // A stale projection and checkpoint to be replaced.
    sqlx::query("INSERT INTO email_domains (id, tenant, domain_name, status, version) VALUES ($1, $2, 'stale.test', 'verified', 1)")
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO projection_checkpoints (projection, stream_seq, generation) VALUES ('email_domains', 3, 7)")
        .execute(&pool)
        .await
        .unwrap();
    let indexes_before = index_names(&pool, "email_domains").await;
    let settings_indexes_before = index_names(&pool, "tenant_email_settings").await;

    let summary = domainctl::replay(&js, &pool, &Default::default())
        .await
        .unwrap();
    assert_eq!(summary.events, last);
    assert_eq!(summary.last_seq, last);
    assert_eq!(summary.domains, 6);
    assert_eq!(summary.tenants, 3);

    assert_eq!(table_rows(&pool).await, expected_rows(&w.all));
    let (default, previous, updated) = settings(&pool, a).await;
    assert_eq!(
        (default.as_deref(), previous.as_deref()),
        (Some("a.test"), None)
    );
    assert_eq!(
        updated,
        Some(t + Duration::hours(2)),
        "updated at the rollback"
    );
    let (default, _, updated) = settings(&pool, b).await;
    assert_eq!(default, None);
    assert_eq!(updated, Some(t), "a tenant row exists from its first event");
    assert_eq!(
        settings(&pool, c).await.0,
        None,
        "a verification that does not activate sets no default"
    );

    assert_eq!(checkpoint(&pool, "email_domains").await, (last as i64, 8));
    assert_eq!(checkpoint(&pool, "tenant_settings").await, (last as i64, 1));
    assert_eq!(index_names(&pool, "email_domains").await, indexes_before);
    assert_eq!(
        index_names(&pool, "tenant_email_settings").await,
        settings_indexes_before
    );
    let leftovers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname LIKE '%_rebuild%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(leftovers, 0);
    // The unique index on live names is in force on the swapped-in table.
    let dup = sqlx::query("INSERT INTO email_domains (id, tenant, domain_name, status, version) VALUES ($1, $2, 'a.test', 'created', 1)")
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .execute(&pool)
        .await;
    assert!(dup.is_err(), "the live-name index is back");

    // Catch-up: fold only to L, while the live checkpoint is beyond it.
    let g = w.verified(c, "g.test", t + Duration::hours(3), true).await;
    let new_last = w.all.len() as u64;
    sqlx::query("UPDATE projection_checkpoints SET stream_seq = $1")
        .bind(new_last as i64)
        .execute(&pool)
        .await
        .unwrap();
    let opts = domainctl::ReplayOptions {
        up_to: Some(last),
        ..Default::default()
    };
    let summary = domainctl::replay(&js, &pool, &opts).await.unwrap();
    assert_eq!(summary.events, last);
    let sw = &summary.projections[0];
    assert_eq!(
        (sw.caught_up_events, sw.checkpoint, sw.generation),
        (new_last - last, new_last, 9)
    );
    let rows = table_rows(&pool).await;
    assert_eq!(rows, expected_rows(&w.all));
    assert_eq!(rows[&g].status, "verified");
    assert_eq!(settings(&pool, c).await.0.as_deref(), Some("g.test"));

    // The CLI: JSON summary only.
    let out = ctl(&nats.url, &db.url, &["replay", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["events"], new_last);
    for phase in ["read", "fold", "write", "index", "swap"] {
        assert!(v["phases"][phase]["seconds"].is_number(), "{phase}");
    }
    assert_eq!(
        checkpoint(&pool, "email_domains").await,
        (new_last as i64, 10)
    );
    assert_eq!(table_rows(&pool).await, expected_rows(&w.all));

    // The stuck-domains view reads the rebuilt table.
    let out = ctl(
        &nats.url,
        &db.url,
        &["domains", "--status", "awaiting_dns", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["domain_name"], "d.test");
    let out = ctl(
        &nats.url,
        &db.url,
        &["domains", "--older-than", "3d", "--json"],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        5,
        "every live domain is older than 3 days"
    );
    let out = ctl(&nats.url, &db.url, &["domains", "--older-than", "soon"]).await;
    assert_eq!(out.code, 2);
    drop(pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_emits_analytics_only_when_asked() {
    let nats = Nats::start().await;
    let (db, _pool) = Db::create().await;
    let js = nats.js().await;
    let mut w = Writer::new(&js).await;
    w.verified(TenantId(Uuid::new_v4()), "h.test", t0(), true)
        .await;
    let count = |js: async_nats::jetstream::Context| async move {
        js.get_stream(runtime::streams::ANALYTICS)
            .await
            .unwrap()
            .cached_info()
            .state
            .messages
    };
    let out = ctl(&nats.url, &db.url, &["replay"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(js.clone()).await, 0);
    let out = ctl(
        &nats.url,
        &db.url,
        &["replay", "--emit-analytics", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // registered, provisioned, dns_checked, verified + activated
    assert_eq!(count(js.clone()).await, 5);
    let out = ctl(&nats.url, &db.url, &["replay", "--projection", "analytics"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        count(js.clone()).await,
        5,
        "the same ids: JetStream drops the repeats"
    );
}

/// A COPY Postgres refuses part-way (here a name too long for a column narrowed by
/// hand, after more than one chunk of rows went out on each stream) fails the replay
/// with Postgres's reason, and leaves both live projections, their checkpoints and
/// generations as they were; once the cause is gone the next replay succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_refused_part_way_leaves_the_live_projections_as_they_were() {
    let nats = Nats::start().await;
    let (_db, pool) = Db::create().await;
    let js = nats.js().await;
    let mut w = Writer::new(&js).await;
    let tenant = TenantId(Uuid::new_v4());
    let t = t0();
    // More rows than two streams of 2,000-row chunks take in one chunk each.
    let domains = 4_500;
    for i in 0..domains {
        let name = if i == domains / 2 {
            "a-name-longer-than-the-narrowed-column.test".to_string()
        } else {
            format!("d{i}.test")
        };
        w.registered(tenant, &name, t).await;
    }
    sqlx::query("INSERT INTO email_domains (id, tenant, domain_name, status, version) VALUES ($1, $2, 'live.test', 'verified', 1)")
        .bind(Uuid::new_v4())
        .bind(tenant.0)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO projection_checkpoints (projection, stream_seq, generation) VALUES ('email_domains', 3, 7), ('tenant_settings', 2, 5)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE email_domains ALTER COLUMN domain_name TYPE varchar(12)")
        .execute(&pool)
        .await
        .unwrap();
    let live_before = table_rows(&pool).await;

    let err = domainctl::replay(&js, &pool, &Default::default())
        .await
        .expect_err("the COPY is refused");
    let text = format!("{err:#}");
    assert!(text.contains("too long"), "{text}");
    assert!(text.contains("email_domains_rebuild"), "{text}");
    assert!(text.contains("nothing was swapped"), "{text}");
    assert_eq!(table_rows(&pool).await, live_before, "live rows untouched");
    assert_eq!(checkpoint(&pool, "email_domains").await, (3, 7));
    assert_eq!(checkpoint(&pool, "tenant_settings").await, (2, 5));
    let settings_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_email_settings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        settings_rows, 0,
        "the tenant settings were not swapped either"
    );

    sqlx::query("ALTER TABLE email_domains ALTER COLUMN domain_name TYPE text")
        .execute(&pool)
        .await
        .unwrap();
    let summary = domainctl::replay(&js, &pool, &Default::default())
        .await
        .unwrap();
    assert_eq!(summary.domains, domains);
    assert_eq!(table_rows(&pool).await, expected_rows(&w.all));
    assert_eq!(
        checkpoint(&pool, "email_domains").await,
        (domains as i64, 8)
    );
}

/// The replay's read carries on with a new consumer when its consumer goes away
/// mid-range (here: deleted by an operator while the read waits on a slow fold), and
/// still delivers every sequence once, in order, leaving no consumer behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_carries_on_from_the_next_sequence_when_its_consumer_is_deleted() {
    use futures::TryStreamExt;
    let nats = Nats::start().await;
    let js = nats.js().await;
    // More messages than the read asks for before the fold takes its first chunk: the
    // rest can only come through a pull made after the delete. The read does not
    // decode, so any payload does.
    let total = 30_000u64;
    let mut acks = Vec::new();
    for i in 0..total {
        let subject = format!("email_domains.events.t{}.d{}", i % 7, i % 101);
        acks.push(js.publish(subject, format!("{i}").into()).await.unwrap());
        if acks.len() == 500 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let stream = js.get_stream(runtime::streams::EVENTS).await.unwrap();
    // A fold that takes one chunk and then waits: the read is blocked mid-range.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let read = tokio::spawn({
        let js = js.clone();
        async move { domainctl::replay::read_events(&js, 1, total, 100, tx).await }
    });
    let mut seqs: Vec<u64> = rx.recv().await.unwrap().iter().map(|(s, _)| *s).collect();
    let names: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    assert_eq!(names.len(), 1, "the read's one consumer: {names:?}");
    stream.delete_consumer(&names[0]).await.unwrap();
    while let Some(chunk) = rx.recv().await {
        seqs.extend(chunk.iter().map(|(s, _)| *s));
    }
    let (n, restarts) = tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the read ends")
        .unwrap()
        .unwrap();
    assert_eq!(n, total);
    assert!(restarts >= 1, "the read noticed its consumer was gone");
    assert!(
        seqs.iter().copied().eq(1..=total),
        "every sequence once, in order ({} received)",
        seqs.len()
    );
    let left: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    assert!(left.is_empty(), "consumers left behind: {left:?}");
}

/// A range whose last sequences are not in the stream (deleted, or never written)
/// ends once the read has waited for them and found nothing after the last event,
/// with every event there is and no new consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_whose_tail_is_missing_ends_with_the_events_there_are() {
    use futures::TryStreamExt;
    let nats = Nats::start().await;
    let js = nats.js().await;
    let total = 1_000u64;
    let mut acks = Vec::new();
    for i in 0..total {
        acks.push(
            js.publish(format!("email_domains.events.t.d{}", i % 10), "x".into())
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(u64, bytes::Bytes)>>(8);
    let drain = tokio::spawn(async move {
        let mut seqs: Vec<u64> = Vec::new();
        while let Some(chunk) = rx.recv().await {
            seqs.extend(chunk.iter().map(|(s, _)| *s));
        }
        seqs
    });
    let (n, restarts) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        domainctl::replay::read_events(&js, 1, total + 50, 100, tx),
    )
    .await
    .expect("the read ends")
    .unwrap();
    assert_eq!((n, restarts), (total, 0));
    assert!(drain.await.unwrap().into_iter().eq(1..=total));
    let stream = js.get_stream(runtime::streams::EVENTS).await.unwrap();
    let left: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    assert!(left.is_empty(), "consumers left behind: {left:?}");
}
