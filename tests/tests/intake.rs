//! The intake moves public commands to their partitions fair between tenants: a
//! tenant's burst already waiting does not put another tenant's command behind all
//! of it, and each tenant's commands keep their publish order.

use email_domain_events::outcome::Outcome;
use email_domain_events::CommandId;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use system_tests::{Instance, Stack, StackOptions};
use uuid::Uuid;

const BURST: usize = 6000;

/// Publishes `register_domain` of `tenant` for each name.
async fn publish_all(stack: &Stack, tenant: Uuid, names: &[String]) {
    let bodies = names.iter().map(|name| {
        json!({"command_id": Uuid::new_v4(), "tenant_id": tenant, "domain": name, "requested_by": "intake-test"})
    });
    stack.publish_all("register_domain", bodies).await;
}

/// Waits until the partition stream holds `n` messages.
async fn wait_moved(stack: &Stack, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let moved = moved_count(stack).await;
        if moved >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{moved} of {n} commands moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Answers a moved command the way a handler does: its outcome.
async fn answer(client: &async_nats::Client, moved: &[u8]) {
    let body: Value = serde_json::from_slice(moved).unwrap();
    let id: CommandId = body["command_id"].as_str().unwrap().parse().unwrap();
    client
        .publish(Outcome::subject(id), "{}".into())
        .await
        .unwrap();
}

/// Answers every command moved from now on, so the intake, which moves only as fast
/// as commands are answered, goes on.
async fn answer_moves(stack: &Stack) -> tokio::task::JoinHandle<()> {
    let mut moves = stack
        .client
        .subscribe(runtime::partitions::SUBJECTS)
        .await
        .unwrap();
    let client = stack.client.clone();
    tokio::spawn(async move {
        while let Some(m) = moves.next().await {
            answer(&client, &m.payload).await;
        }
    })
}

async fn moved_count(stack: &Stack) -> u64 {
    let mut stream = stack
        .js
        .get_stream(runtime::partitions::STREAM)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

/// The (tenant, domain) of every command in the partition stream, in stream order.
async fn moved_in_order(stack: &Stack, n: u64) -> Vec<(Uuid, String)> {
    let stream = stack
        .js
        .get_stream(runtime::partitions::STREAM)
        .await
        .unwrap();
    let mut moved = Vec::new();
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        let tenant = body["tenant_id"].as_str().unwrap().parse().unwrap();
        moved.push((tenant, body["domain"].as_str().unwrap().to_string()));
    }
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenants_command_moves_ahead_of_a_waiting_burst_and_each_tenant_keeps_its_order() {
    let stack = Stack::start_with(StackOptions::infrastructure_only()).await;
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let burst: Vec<String> = (0..BURST).map(|i| format!("x{i}.example.org")).collect();
    // All of X's burst, then Y's one command, wait before the intake starts.
    publish_all(&stack, x, &burst).await;
    publish_all(&stack, y, &["y.example.org".to_string()]).await;

    let answers = answer_moves(&stack).await;
    let intake = Instance::start(stack.config.clone(), command_handler::run_intake);
    let total = BURST as u64 + 1;
    wait_moved(&stack, total).await;
    answers.abort();
    let moved = moved_in_order(&stack, total).await;
    intake.stop().await;

    let at = moved
        .iter()
        .position(|(t, _)| *t == y)
        .expect("Y's command moved");
    assert!(
        at < BURST / 2,
        "Y's command was moved after {at} of X's {BURST} (first come, first served would be {BURST})"
    );
    let xs: Vec<&String> = moved
        .iter()
        .filter(|(t, _)| *t == x)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        xs,
        burst.iter().collect::<Vec<_>>(),
        "X's commands keep their publish order"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_moves_no_faster_than_the_handlers_answer() {
    let stack = Stack::start_with(StackOptions::infrastructure_only()).await;
    let burst: Vec<String> = (0..2000).map(|i| format!("x{i}.example.org")).collect();
    publish_all(&stack, Uuid::new_v4(), &burst).await;
    let limit = (command_handler::INTAKE_UNANSWERED_PER_PARTITION
        * stack.config.handler_partitions as usize) as u64;
    let intake = Instance::start(stack.config.clone(), command_handler::run_intake);
    // Nobody answers: the intake moves its limit of unanswered commands, then waits.
    wait_moved(&stack, limit).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        moved_count(&stack).await,
        limit,
        "moved beyond the unanswered limit"
    );
    // Still nobody answers (a handler down): after a while the intake stops waiting
    // for those and moves the next ones.
    wait_moved(&stack, 2 * limit).await;
    // Those answered, and every later move answered at once: the rest go.
    let answers = answer_moves(&stack).await;
    let stream = stack
        .js
        .get_stream(runtime::partitions::STREAM)
        .await
        .unwrap();
    for seq in 1..=2 * limit {
        let m = stream.get_raw_message(seq).await.unwrap();
        answer(&stack.client, &m.payload).await;
    }
    wait_moved(&stack, 2000).await;
    answers.abort();
    intake.stop().await;
    stack.shutdown().await;
}
