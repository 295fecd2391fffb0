//! Helpers shared by the dev provider's tests: a running server and a raw HTTP client.
#![allow(dead_code)]

use std::net::SocketAddr;

use dev_provider::{DevProviderConfig, DevProviderControl};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub control: DevProviderControl,
    _task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(config: DevProviderConfig) -> Self {
        let (addr, task) = dev_provider::spawn(config).await;
        let base = format!("http://{addr}");
        Self {
            addr,
            control: DevProviderControl::new(&base),
            base,
            http: reqwest::Client::new(),
            _task: task,
        }
    }

    /// An authorised API call; returns status, headers and the JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth("re_test_key");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("dev provider answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, json)
    }

    pub async fn create(&self, name: &str) -> Value {
        let (status, _, body) = self
            .call(
                Method::POST,
                "/domains",
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}
