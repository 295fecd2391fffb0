//! The projections: a projector that crashes right after a commit applies no event
//! twice and skips none; batches that change no row still move the checkpoint.

use email_domain_events::outcome::Verdict;
use std::time::{Duration, Instant};
use system_tests::{crash_after, Stack, StackOptions};
use uuid::Uuid;

/// Reads until `done` holds for what was read, or `deadline` passes; the last read.
async fn read_until<T, F: std::future::Future<Output = T>>(
    deadline: Instant,
    mut read: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    loop {
        let value = read().await;
        if done(&value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_right_after_a_commit_applies_no_event_twice() {
    // The projectors stop right after committing their first batch, before the ack.
    let options = projector::Options {
        crash_after_commit: Some(crash_after(1)),
        skipped: None,
    };
    let mut stack = Stack::start_with(StackOptions {
        projector: options,
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    for i in 0..5 {
        let o = stack
            .send("register_domain", tenant, &format!("crash{i}.test"))
            .await;
        assert_eq!(o.outcome, Verdict::Accepted);
    }
    // Wait until the handler and provider worker are done with these domains.
    loop {
        let events = stack.events().await;
        if events
            .iter()
            .filter(|e| e.data.type_name() == "domain_provisioned")
            .count()
            == 5
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The crashed projectors committed something (a partition's first batch).
    let mut before = 0i64;
    for _ in 0..200 {
        before = sqlx::query_scalar("SELECT coalesce(max(stream_seq), 0) FROM projection_checkpoints WHERE projection LIKE 'email_domains/%'")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
        if before > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(before > 0, "the first batch was committed");
    // Restart: the log is read again from the lowest checkpoint, so the committed
    // events come again and must be skipped, not re-applied.
    stack.stop_projectors();
    let skipped = stack.start_projectors(projector::Options::default());
    for i in 0..5 {
        stack
            .wait_status(tenant, &format!("crash{i}.test"), "awaiting_dns")
            .await;
    }
    // A row reaches `awaiting_dns` before its pre-flight result is projected: wait
    // until the stack is quiet (the pre-flight appended, every projection at the end
    // of the log), then compare each row with the whole log.
    stack.settled().await;
    let events = stack.events().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..5 {
        let name = format!("crash{i}.test");
        let count = events.iter().filter(|e| e.domain == name).count() as i64;
        let version = read_until(
            deadline,
            || {
                sqlx::query_scalar::<_, i64>(
                    "SELECT version FROM email_domains WHERE domain_name = $1",
                )
                .bind(&name)
                .fetch_one(&stack.pool)
            },
            |v| v.as_ref().is_ok_and(|v| *v >= count),
        )
        .await
        .unwrap();
        assert_eq!(
            version, count,
            "{name}: row version equals its number of events"
        );
    }
    let last_seq = {
        let stream = stack.js.get_stream("EMAIL_DOMAIN_EVENTS").await.unwrap();
        let mut s = stream.clone();
        s.info().await.unwrap().state.last_sequence as i64
    };
    let checkpoint = read_until(
        deadline,
        || projector::consume::checkpoint(&stack.pool, "email_domains"),
        |c| c.as_ref().is_ok_and(|c| *c as i64 >= last_seq),
    )
    .await
    .unwrap() as i64;
    assert_eq!(
        checkpoint, last_seq,
        "the checkpoint reached the end of the log"
    );
    // The rows equal a fresh fold of the log, computed here without the projector.
    for i in 0..5 {
        let name = format!("crash{i}.test");
        let expected =
            email_domain_events::state::replay(events.iter().filter(|e| e.domain == name)).unwrap();
        let row: serde_json::Value =
            sqlx::query_scalar("SELECT to_jsonb(d) FROM email_domains d WHERE domain_name = $1")
                .bind(&name)
                .fetch_one(&stack.pool)
                .await
                .unwrap();
        let row: projector::email_domains::Row = serde_json::from_value(row).unwrap();
        assert_eq!(
            row,
            projector::email_domains::Row::from_state(&expected),
            "{name}"
        );
    }
    drop(skipped);
    let tenant_row: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_email_settings WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(tenant_row, 1);
    // Each analytics event exactly once despite the analytics emitter's crash. The
    // emitter keeps no Postgres checkpoint, so nothing above waited for it: wait here.
    let registered = || async {
        stack
            .analytics()
            .await
            .iter()
            .filter(|a| a["type"] == "email_domain.registered")
            .count()
    };
    // Events a killed emitter held come back when their ack wait (15 s) runs out.
    let deadline = Instant::now() + Duration::from_secs(30);
    read_until(deadline, registered, |n| *n >= 5).await;
    assert_eq!(registered().await, 5);
    stack.shutdown().await;
}

/// Events that cannot change a tenant's settings move only its projector's checkpoint:
/// the checkpoint still reaches the end of the log, and the settings stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_that_change_no_settings_still_move_the_checkpoint() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let o = stack.send("register_domain", tenant, "first.test").await;
    assert_eq!(o.outcome, Verdict::Accepted);
    let updated_at = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT updated_at FROM tenant_email_settings WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_optional(&stack.pool)
        .await
        .unwrap()
        .flatten()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = read_until(deadline, updated_at, Option::is_some)
        .await
        .expect("a tenant row");
    // More registrations of the same tenant: each appends events (registered,
    // provisioned, pre-flight) none of which can change its settings.
    for i in 0..4 {
        let o = stack
            .send("register_domain", tenant, &format!("more{i}.test"))
            .await;
        assert_eq!(o.outcome, Verdict::Accepted);
    }
    let last_seq = || async {
        stack
            .js
            .get_stream("EMAIL_DOMAIN_EVENTS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .last_sequence as i64
    };
    let checkpoint = || async {
        projector::consume::checkpoint(&stack.pool, "tenant_settings")
            .await
            .unwrap() as i64
    };
    // Wait for the provider and the pre-flight to be done (the log stops growing),
    // then for the checkpoint to reach its end.
    let mut quiet_since = (last_seq().await, Instant::now());
    loop {
        let now = last_seq().await;
        if now != quiet_since.0 {
            quiet_since = (now, Instant::now());
        } else if quiet_since.1.elapsed() > Duration::from_millis(700) && checkpoint().await == now
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tenant_settings checkpoint stayed at {} of {now}",
            checkpoint().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        quiet_since.0 >= 13,
        "five registrations appended their events"
    );
    // No change was recorded for the tenant: its row's time is the first event's.
    assert_eq!(updated_at().await, Some(first), "settings unchanged");
    stack.shutdown().await;
}

/// Two writers believe they own one partition (one kept going after its lease ran
/// out): the first commit moves the checkpoint; the second, from the same position,
/// applies nothing. So no event is applied twice, whoever held the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_whose_checkpoint_moved_under_it_applies_nothing() {
    use projector::partitioned::{checkpoint_name, commit_slice, partition_position, Position};
    let stack = Stack::start_with(StackOptions {
        projectors: false,
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    let o = stack.send("register_domain", tenant, "twice.test").await;
    assert_eq!(o.outcome, Verdict::Accepted);
    let events: Vec<(u64, email_domain_events::Event)> = (1u64..)
        .zip(stack.events().await)
        .filter(|(_, e)| e.domain == "twice.test")
        .collect();
    assert!(!events.is_empty());
    let upto = events.last().unwrap().0;
    let (checkpoint, generation) = partition_position(&stack.pool, "email_domains", 0, 1)
        .await
        .unwrap();
    let name = checkpoint_name("email_domains", 0, 1);
    let at = Position {
        name: &name,
        checkpoint,
        generation,
    };
    let mut first = projector::email_domains::EmailDomains::default();
    let mut second = projector::email_domains::EmailDomains::default();
    assert!(commit_slice(&stack.pool, &mut first, &at, &events, upto)
        .await
        .unwrap());
    assert!(
        !commit_slice(&stack.pool, &mut second, &at, &events, upto)
            .await
            .unwrap(),
        "the second writer's checkpoint had moved"
    );
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM email_domains WHERE domain_name = 'twice.test'")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(version, events.len() as i64, "each event applied once");
    assert_eq!(
        projector::consume::checkpoint(&stack.pool, "email_domains")
            .await
            .unwrap(),
        upto
    );
    stack.shutdown().await;
}
