//! Restarts of the infrastructure under load: nats-server (its store kept, so
//! JetStream data survives) and Postgres (a throwaway cluster of the test's own),
//! each restarted while commands are flowing. Nothing acknowledged is lost, nothing is
//! applied twice.

use email_domain_events::outcome::Verdict;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

/// Publishes one register command, returning its ack future (or the publish error).
async fn publish_register(
    stack: &Stack,
    tenant: Uuid,
    domain: &str,
) -> (
    Uuid,
    Option<async_nats::jetstream::context::PublishAckFuture>,
) {
    let id = Uuid::new_v4();
    let body = json!({"command_id": id, "tenant_id": tenant, "domain": domain, "requested_by": "restart-test"});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.to_string().as_str());
    let r = stack
        .js
        .publish_with_headers(
            "email_domains.commands.register_domain",
            headers,
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await;
    (id, r.ok())
}

/// Waits until every command in `ids` has a stored outcome; returns them.
async fn wait_outcomes(stack: &Stack, ids: &[Uuid], within: Duration) -> HashMap<Uuid, Value> {
    let deadline = Instant::now() + within;
    let mut got = HashMap::new();
    loop {
        for id in ids {
            if !got.contains_key(id) {
                if let Some(o) = stack.stored_outcome(&id.to_string()).await {
                    got.insert(*id, o);
                }
            }
        }
        if got.len() == ids.len() || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `n` named rows of the tenant are `awaiting_dns` (through SQL).
async fn wait_awaiting(stack: &Stack, names: &[String], within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM email_domains WHERE status = 'awaiting_dns' AND domain_name = ANY($1)",
        )
        .bind(names)
        .fetch_one(&stack.pool)
        .await
        .unwrap_or(-1);
        if n == names.len() as i64 || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_server_restarted_under_load_loses_no_acknowledged_command() {
    let mut stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    // Every outcome as published, to see repeats.
    let mut outcome_sub = stack
        .client
        .subscribe("email_domains.outcomes.>")
        .await
        .unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<HashMap<String, Vec<Vec<u8>>>>> = Default::default();
    let collector = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = outcome_sub.next().await {
                let mut seen = seen.lock().unwrap();
                seen.entry(m.subject.to_string())
                    .or_default()
                    .push(m.payload.to_vec());
            }
        })
    };
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..300 {
        if i == 150 {
            let t = Instant::now();
            tokio::task::block_in_place(|| stack.nats.restart());
            eprintln!("nats-server restarted in {:?}", t.elapsed());
        }
        let name = format!("nr{i}.test");
        let (id, ack) = publish_register(&stack, tenant, &name).await;
        pending.push((id, name, ack));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut acked = Vec::new();
    let mut unacked = 0;
    for (id, name, ack) in pending {
        match ack {
            Some(f) => match tokio::time::timeout(Duration::from_secs(10), f).await {
                Ok(Ok(_)) => acked.push((id, name)),
                _ => unacked += 1,
            },
            None => unacked += 1,
        }
    }
    eprintln!(
        "published 300 in {:?}: {} acknowledged, {unacked} not",
        started.elapsed(),
        acked.len()
    );
    assert!(acked.len() >= 150, "most publishes were acknowledged");
    let ids: Vec<Uuid> = acked.iter().map(|(id, _)| *id).collect();
    let outcomes = wait_outcomes(&stack, &ids, Duration::from_secs(60)).await;
    let missing: Vec<_> = acked
        .iter()
        .filter(|(id, _)| !outcomes.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but no outcome: {missing:?}"
    );
    for (id, name) in &acked {
        assert_eq!(
            outcomes[id]["outcome"], "accepted",
            "{name}: {}",
            outcomes[id]
        );
    }
    let names: Vec<String> = acked.iter().map(|(_, n)| n.clone()).collect();
    let n = wait_awaiting(&stack, &names, Duration::from_secs(60)).await;
    assert_eq!(
        n,
        names.len() as i64,
        "every acknowledged domain reaches awaiting_dns"
    );

    let events = stack.events().await;
    let per = system_tests::check_log(&events);
    // One registration per acknowledged command, and each command id caused one registration.
    for (id, name) in &acked {
        let regs = events
            .iter()
            .filter(|e| e.causation_id.0 == *id && e.data.type_name() == "domain_registered")
            .count();
        assert_eq!(regs, 1, "{name}: registrations caused by {id}");
    }
    let registered: HashSet<&str> = events
        .iter()
        .filter(|e| e.data.type_name() == "domain_registered")
        .map(|e| e.domain.as_str())
        .collect();
    assert_eq!(registered.len(), per.len(), "one registration per name");
    system_tests::rows_equal_fold(&stack, &per).await;
    // Any outcome published more than once was the same each time.
    drop(stack.client.flush().await);
    collector.abort();
    stack.shutdown().await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (subject, payloads) in seen {
        assert!(
            payloads.windows(2).all(|w| w[0] == w[1]),
            "{subject}: different outcomes {payloads:?}"
        );
    }
    eprintln!("nats restart test took {:?}", started.elapsed());
}

/// A Postgres cluster of the test's own: initdb + pg_ctl as the `postgres` user, in a
/// temporary directory, on a free port, trust authentication.
struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser")
}

impl PgCluster {
    fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("edtest-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "chown the cluster dir to postgres");
        let data = dir.path().join("data");
        let out = as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = PgCluster { dir, port };
        c.pg_ctl(&["start"]);
        c
    }

    fn pg_ctl(&self, action: &[&str]) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let mut args = vec![
            format!("{PG_BIN}/pg_ctl"),
            "-D".into(),
            data.display().to_string(),
            "-o".into(),
            opts,
            "-l".into(),
            log.display().to_string(),
            "-w".into(),
        ];
        args.extend(action.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = as_postgres(&refs);
        assert!(
            out.status.success(),
            "pg_ctl {action:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_the_projections_catch_up_with_nothing_lost() {
    let pg = tokio::task::block_in_place(PgCluster::start);
    let stack = Stack::start_with(StackOptions {
        database_url: Some(pg.url("email_domains_restart")),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let tenants: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut pending = Vec::new();
    let mut names = Vec::new();
    for i in 0..300 {
        if i == 150 {
            let t = Instant::now();
            tokio::task::block_in_place(|| pg.pg_ctl(&["-m", "fast", "restart"]));
            eprintln!("postgres restarted in {:?}", t.elapsed());
        }
        let name = format!("pr{i}.test");
        let (id, ack) = publish_register(&stack, tenants[i % 3], &name).await;
        pending.push((id, name.clone(), ack.expect("publish")));
        names.push(name);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut ids = Vec::new();
    for (id, name, ack) in pending {
        ack.await.unwrap_or_else(|e| panic!("{name}: {e}"));
        ids.push(id);
    }
    let outcomes = wait_outcomes(&stack, &ids, Duration::from_secs(60)).await;
    assert_eq!(outcomes.len(), ids.len(), "every command has an outcome");
    assert!(outcomes.values().all(|o| o["outcome"] == "accepted"));
    let n = wait_awaiting(&stack, &names, Duration::from_secs(60)).await;
    assert_eq!(
        n, 300,
        "every domain reaches awaiting_dns after the restart"
    );
    // The projections caught up: checkpoints at the end of the log.
    let mut info = stack.js.get_stream("EMAIL_DOMAIN_EVENTS").await.unwrap();
    let last = info.info().await.unwrap().state.last_sequence as i64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT projection FROM projection_checkpoints WHERE projection NOT LIKE '%/%'",
        )
        .fetch_all(&stack.pool)
        .await
        .unwrap();
        let mut cps = Vec::new();
        for name in names {
            let at = projector::consume::checkpoint(&stack.pool, &name)
                .await
                .unwrap();
            cps.push((name, at as i64));
        }
        let behind: Vec<_> = cps.iter().filter(|(_, s)| *s < last).collect();
        if !cps.is_empty() && behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoints behind the log's end {last}: {cps:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = stack.events().await;
    let per = system_tests::check_log(&events);
    assert_eq!(per.len(), 300, "300 registrations");
    system_tests::rows_equal_fold(&stack, &per).await;
    // The tenant settings projection has each tenant once.
    let tenants_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_email_settings")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(tenants_rows, 3);
    // Still answering a new command after all that.
    let o = stack
        .send("register_domain", tenants[0], "after-restart.test")
        .await;
    assert_eq!(o.outcome, Verdict::Accepted);
    stack.shutdown().await;
    eprintln!("postgres restart test took {:?}", started.elapsed());
}
