//! Redelivery after JetStream's dedup window, and many publishers racing on one name.

use email_domain_events::outcome::{Outcome, Verdict};
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_published_again_after_the_dedup_window_has_no_second_effect() {
    // A one-second window: JetStream itself stops hiding the repeat quickly.
    let stack = Stack::start_with(StackOptions {
        command_dedup_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    let id = Uuid::new_v4();
    let body = json!({"command_id": id, "tenant_id": tenant, "domain": "late.test"});
    let first = stack.send_body("register_domain", &body).await;
    assert_eq!(first.outcome, Verdict::Accepted);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The same command, the same Nats-Msg-Id, after the window: stored again by JetStream.
    let mut sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{id}"))
        .await
        .unwrap();
    stack.publish("register_domain", &body, None).await;
    let again = stack.next_outcome(&mut sub, &id.to_string()).await;
    assert_eq!(again, first, "the same outcome");
    stack.wait_status(tenant, "late.test", "awaiting_dns").await;
    let registered = stack
        .events()
        .await
        .iter()
        .filter(|e| e.data.type_name() == "domain_registered")
        .count();
    assert_eq!(registered, 1, "no second registration");
    assert_eq!(stack.domains(tenant).await.len(), 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_publishers_racing_on_one_name_lose_no_update_and_every_command_gets_an_outcome() {
    let stack = Stack::start().await;
    let tenants: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let kinds = [
        "register_domain",
        "delete_domain",
        "dns_configured",
        "refresh_status",
    ];
    let mut outcomes_sub = stack
        .client
        .subscribe("email_domains.outcomes.>")
        .await
        .unwrap();
    let mut sent = Vec::new();
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let js = stack.js.clone();
            let tenants = tenants.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let id = Uuid::new_v4();
                    let t = kinds[(p + i) % kinds.len()];
                    let body = json!({"command_id": id, "tenant_id": tenants[(p * 7 + i) % tenants.len()], "domain": "race.test"});
                    js.publish(format!("email_domains.commands.{t}"), serde_json::to_vec(&body).unwrap().into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    for p in publishers {
        sent.extend(p.await.unwrap());
    }
    let mut got: HashMap<String, Outcome> = HashMap::new();
    while got.len() < sent.len() {
        let m = tokio::time::timeout(Duration::from_secs(30), outcomes_sub.next())
            .await
            .expect("every outcome")
            .unwrap();
        let o: Outcome = serde_json::from_slice(&m.payload).unwrap();
        got.insert(o.command_id.unwrap().to_string(), o);
    }
    for id in &sent {
        assert!(got.contains_key(&id.to_string()), "no outcome for {id}");
    }
    // Once the provider work has settled, check the log and the rows.
    stack.settled().await;
    let events = stack.events().await;
    let mut by_domain: HashMap<_, Vec<u64>> = HashMap::new();
    for e in &events {
        by_domain.entry(e.domain_id).or_default().push(e.version);
    }
    for (d, versions) in &by_domain {
        assert_eq!(
            *versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "gapless versions for {d}"
        );
    }
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    let accepted_registrations = got
        .values()
        .filter(|o| o.outcome == Verdict::Accepted && o.domain_id.is_some())
        .count();
    assert!(accepted_registrations > 0);
    // At most one live registration of the name, in the log and in the table.
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM email_domains WHERE domain_name = 'race.test' AND status <> 'deactivated'")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert!(live <= 1, "{live} live registrations");
    let registrations = events
        .iter()
        .filter(|e| e.data.type_name() == "domain_registered")
        .count();
    let accepted_registers = sent
        .iter()
        .filter(|id| got[&id.to_string()].outcome == Verdict::Accepted)
        .filter(|id| {
            events
                .iter()
                .any(|e| e.causation_id.0 == **id && e.data.type_name() == "domain_registered")
        })
        .count();
    assert_eq!(
        registrations, accepted_registers,
        "each registration came from one accepted register_domain"
    );
    stack.shutdown().await;
}
