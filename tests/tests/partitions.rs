//! Scale-out: three command handler instances share the partitions, two instances of
//! each projector run beside each other, one handler is killed mid-load (like SIGKILL:
//! nothing released), and another is added. Every domain's commands take effect in
//! publish order, every command has exactly one outcome, the rows equal a fresh fold
//! of the log, and the partitions move within twice the lease TTL.

use email_domain_events::Event;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

const PARTITIONS: u32 = 6;
const PROJECTOR_PARTITIONS: u32 = 4;
const PROJECTIONS: [&str; 2] = ["email_domains", "tenant_settings"];
const TTL: Duration = Duration::from_secs(2);

/// What each (tenant, name) is sent, step by step: the same names for every tenant,
/// so tenants race for them too.
const STEPS: [&str; 8] = [
    "register_domain",
    "dns_configured",
    "refresh_status",
    "delete_domain",
    "register_domain",
    "refresh_status",
    "delete_domain",
    "register_domain",
];

/// Publishes step `step` for every (tenant, name), interleaved; records the ids.
async fn publish_step(
    stack: &Stack,
    step: usize,
    tenants: &[Uuid],
    names: &[String],
    sent: &mut BTreeMap<(Uuid, String), Vec<Uuid>>,
) {
    let mut bodies = Vec::new();
    for name in names {
        for &tenant in tenants {
            let id = Uuid::new_v4();
            bodies.push(json!({"command_id": id, "tenant_id": tenant, "domain": name, "requested_by": "partitions-test"}));
            sent.entry((tenant, name.clone())).or_default().push(id);
        }
    }
    stack.publish_all(STEPS[step], bodies).await;
}

/// Per (tenant, name), the public commands that caused events, in log order, are in
/// publish order.
fn assert_publish_order(events: &[Event], sent: &BTreeMap<(Uuid, String), Vec<Uuid>>) {
    let index: HashMap<Uuid, usize> = sent
        .values()
        .flat_map(|ids| ids.iter().enumerate().map(|(i, id)| (*id, i)))
        .collect();
    let mut last: HashMap<(Uuid, String), (usize, Uuid)> = HashMap::new();
    for e in events {
        let Some(&i) = index.get(&e.causation_id.0) else {
            continue; // a scheduled re-check or a provider result
        };
        let key = (e.tenant_id.0, e.domain.clone());
        if let Some(&(before, by)) = last.get(&key) {
            assert!(
                i >= before,
                "{key:?}: command #{i} ({}) took effect after #{before} ({by})",
                e.causation_id.0
            );
        }
        last.insert(key, (i, e.causation_id.0));
    }
    // Tenants race for the same names: at least one holds each name at some point.
    let names: HashSet<&String> = sent.keys().map(|(_, n)| n).collect();
    let with_events: HashSet<&String> = last.keys().map(|(_, n)| n).collect();
    assert_eq!(with_events, names, "every name has events");
}

/// How the scenario's handler instances run, and how one is killed.
trait Handlers {
    fn start(&mut self, stack: &mut Stack);
    /// Ends one instance at once, the way SIGKILL does.
    fn kill_one(&mut self, stack: &mut Stack);
    /// A second instance of each projector beside the first.
    fn add_projectors(&mut self, stack: &mut Stack);
    /// Ends one of the two instances of each Postgres projection at once; false
    /// when this kind of instance cannot be killed alone.
    fn kill_projectors(&mut self, stack: &mut Stack) -> bool;
}

/// Instances on tokio runtimes of their own in this process.
#[derive(Default)]
struct InProcess(Vec<system_tests::Instance>);

impl Handlers for InProcess {
    fn start(&mut self, stack: &mut Stack) {
        self.0.push(stack.start_handler_instance());
    }
    fn kill_one(&mut self, _: &mut Stack) {
        self.0.remove(0).kill();
    }
    fn add_projectors(&mut self, stack: &mut Stack) {
        stack.start_projectors(projector::Options::default());
    }
    fn kill_projectors(&mut self, _: &mut Stack) -> bool {
        // In-process projectors share one shutdown signal (the process variant kills one).
        false
    }
}

/// Instances as processes of the `command-handler` and `projector` binaries, killed
/// with SIGKILL.
#[derive(Default)]
struct Processes {
    handlers: Vec<u32>,
    projectors: Vec<u32>,
}

impl Handlers for Processes {
    fn start(&mut self, stack: &mut Stack) {
        self.handlers.push(stack.start_handler_process());
    }
    fn kill_one(&mut self, stack: &mut Stack) {
        stack.kill_process(self.handlers.remove(0));
    }
    fn add_projectors(&mut self, stack: &mut Stack) {
        for p in ["email_domains", "tenant_settings"] {
            self.projectors.push(stack.start_projector_process(p));
        }
    }
    fn kill_projectors(&mut self, stack: &mut Stack) -> bool {
        for pid in std::mem::take(&mut self.projectors) {
            stack.kill_process(pid);
        }
        true
    }
}

/// Three handlers and two instances of each projector; interleaved commands for the
/// same names from four tenants; one handler killed after half of them, one added.
async fn kill_and_add(mut stack: Stack, mut handlers: impl Handlers) {
    handlers.add_projectors(&mut stack);
    for _ in 0..3 {
        handlers.start(&mut stack);
    }
    stack
        .wait_partitions(PARTITIONS, 3, Duration::from_secs(20))
        .await;
    // The two instances of each projection share its partitions.
    for p in PROJECTIONS {
        stack
            .wait_projection_partitions(p, PROJECTOR_PARTITIONS, 2, Duration::from_secs(20))
            .await;
    }

    let mut outcomes_seen = stack
        .client
        .subscribe("email_domains.outcomes.>")
        .await
        .unwrap();
    let tenants: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let names: Vec<String> = (0..12).map(|i| format!("n{i}.partitions.test")).collect();
    let mut sent = BTreeMap::new();

    for step in 0..4 {
        publish_step(&stack, step, &tenants, &names, &mut sent).await;
    }
    // Killed while the first half is being worked off.
    handlers.kill_one(&mut stack);
    let projector_killed = handlers.kill_projectors(&mut stack);
    let killed = Instant::now();
    for step in 4..6 {
        publish_step(&stack, step, &tenants, &names, &mut sent).await;
    }
    let moved = stack.wait_partitions(PARTITIONS, 2, TTL * 4).await;
    assert!(
        moved <= TTL * 2,
        "the killed instance's partitions moved after {moved:?} (> 2 × {TTL:?})"
    );
    if projector_killed {
        // The survivor takes the killed projector's partitions (the wait fails past
        // 4 × the TTL).
        for p in PROJECTIONS {
            stack
                .wait_projection_partitions(p, PROJECTOR_PARTITIONS, 1, TTL * 4)
                .await;
        }
        eprintln!(
            "the killed projectors' partitions moved within {:?} of the kill",
            killed.elapsed()
        );
    }
    handlers.start(&mut stack);
    let joined = stack
        .wait_partitions(PARTITIONS, 3, Duration::from_secs(20))
        .await;
    for step in 6..8 {
        publish_step(&stack, step, &tenants, &names, &mut sent).await;
    }

    // Every command has its outcome, well before the 30 s ack wait would have
    // handed the killed instance's commands out again.
    let ids: Vec<Uuid> = sent.values().flatten().copied().collect();
    for id in &ids {
        loop {
            if stack.stored_outcome(&id.to_string()).await.is_some() {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(28),
                "no outcome for {id} {:?} after the kill",
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let all_out = killed.elapsed();
    stack.settled().await;

    // Exactly one outcome per command: a command handled again after the handoff
    // publishes the stored outcome again, never another one.
    stack.client.flush().await.unwrap();
    let mut bodies: HashMap<Uuid, HashSet<String>> = HashMap::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(300), outcomes_seen.next()).await
    {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let id: Uuid = v["command_id"].as_str().unwrap().parse().unwrap();
        bodies.entry(id).or_default().insert(v.to_string());
    }
    for id in &ids {
        let seen = bodies.get(id).map_or(0, HashSet::len);
        assert_eq!(
            seen,
            1,
            "{id}: {seen} different outcomes ({:?})",
            bodies.get(id)
        );
    }

    let events = stack.events().await;
    let per = system_tests::check_log(&events);
    assert_publish_order(&events, &sent);
    system_tests::rows_equal_fold(&stack, &per).await;
    eprintln!(
        "{} commands; partitions moved {moved:?} after the kill, shared with the new instance after {joined:?}; all outcomes {all_out:?} after the kill",
        ids.len()
    );
    drop(handlers);
    stack.shutdown().await;
}

fn options() -> StackOptions {
    StackOptions {
        handlers: 0,
        handler_partitions: PARTITIONS,
        projector_partitions: PROJECTOR_PARTITIONS,
        lease_ttl: TTL,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_handlers_one_killed_one_added_keep_every_domains_order_and_every_outcome() {
    let stack = Stack::start_with(options()).await;
    kill_and_add(stack, InProcess::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_handler_processes_one_sigkilled_one_added_keep_every_domains_order() {
    let stack = Stack::start_with(StackOptions {
        processes: Some(system_tests::service_binaries()),
        // The other services as processes too, as deployed.
        ..options()
    })
    .await;
    kill_and_add(stack, Processes::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_instance_hands_its_partitions_over_at_once_and_status_shows_the_owners() {
    let mut stack = Stack::start_with(StackOptions {
        handlers: 0,
        handler_partitions: PARTITIONS,
        // Long enough that only a handover (not a lease running out) moves them in time.
        lease_ttl: Duration::from_secs(10),
        ..Default::default()
    })
    .await;
    let first = stack.start_handler_instance();
    let second = stack.start_handler_instance();
    stack
        .wait_partitions(PARTITIONS, 2, Duration::from_secs(60))
        .await;

    let status = domainctl::status::read(&stack.js, PARTITIONS)
        .await
        .unwrap();
    assert_eq!(status.instances.len(), 2, "{status:?}");
    assert_eq!(status.partitions.len(), PARTITIONS as usize);
    assert!(
        status.partitions.iter().all(|q| q.owner.is_some()),
        "{status:?}"
    );
    assert!(status.intake.owner.is_some(), "{status:?}");

    first.stop().await;
    let moved = stack
        .wait_partitions(PARTITIONS, 1, Duration::from_secs(10))
        .await;
    let tenant = Uuid::new_v4();
    let outcome = stack.send("register_domain", tenant, "handover.test").await;
    assert_eq!(
        outcome.outcome,
        email_domain_events::outcome::Verdict::Accepted
    );
    eprintln!("a clean stop handed the partitions over in {moved:?}");
    let out = domainctl::run_args([
        "domainctl",
        "--nats-url",
        &stack.config.nats_url,
        "--json",
        "status",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["partitions"].as_array().map(Vec::len),
        Some(PARTITIONS as usize)
    );
    assert_eq!(v["instances"].as_array().map(Vec::len), Some(1), "{v}");

    // No instance left: a command waits where nobody works, and status says so.
    second.stop().await;
    stack
        .publish(
            "register_domain",
            &json!({"command_id": Uuid::new_v4(), "tenant_id": tenant, "domain": "waits.test"}),
            None,
        )
        .await;
    let out =
        domainctl::run_args(["domainctl", "--nats-url", &stack.config.nats_url, "status"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("intake") && out.stdout.contains("NONE"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("no handler instance works"),
        "{}",
        out.stderr
    );
    stack.shutdown().await;
}
