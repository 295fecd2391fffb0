//! Shared by the gateway's integration tests: a whole stack (system-tests harness)
//! with the gateway in-process on 127.0.0.1:0.
#![allow(dead_code)]

pub mod spec;

use gateway::token::{Claims, Keys};
use runtime::Shutdown;
use system_tests::Stack;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-for-the-gateway";

pub struct Gw {
    pub stack: Stack,
    pub base: String,
    pub keys: Keys,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Gw {
    pub async fn start() -> Gw {
        Self::start_with(|_| {}).await
    }

    /// [`Gw::start`] with the gateway's options changed by `change`.
    pub async fn start_with(change: impl FnOnce(&mut gateway::Options)) -> Gw {
        let stack = Stack::start().await;
        let keys = Keys::new(SECRET);
        let mut opts = gateway::Options::new(keys.clone());
        change(&mut opts);
        let router = gateway::app(stack.config.clone(), opts)
            .await
            .expect("gateway starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let task = tokio::spawn(async move {
            gateway::serve(listener, router, s)
                .await
                .expect("gateway serves");
        });
        Gw {
            stack,
            base,
            keys,
            shutdown,
            task,
        }
    }

    /// Another gateway instance over the same stack (NATS, Postgres) and secret, as
    /// when several run behind a load balancer; stops with `shutdown.trigger()`.
    pub async fn another_instance(&self) -> (String, Shutdown) {
        let router = gateway::app(
            self.stack.config.clone(),
            gateway::Options::new(self.keys.clone()),
        )
        .await
        .expect("a second gateway starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            let _ = gateway::serve(listener, router, s).await;
        });
        (base, shutdown)
    }

    pub fn token(&self, tenant: Uuid, edition: &str, ttl_secs: i64) -> String {
        self.keys.sign(&Claims {
            tenant_id: tenant,
            edition: edition.into(),
            exp: chrono::Utc::now().timestamp() + ttl_secs,
            sub: Some("test".into()),
        })
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
        self.stack.shutdown().await;
    }
}
