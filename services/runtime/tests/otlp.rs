//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans leave the process as OTLP
//! HTTP/protobuf posts to `<endpoint>/v1/traces`, and trace context is written into
//! NATS headers. (One test in this binary: the tracing subscriber is global.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;
use svc_runtime as runtime;

/// A minimal OTLP/HTTP collector: answers 200 to each POST and reports
/// (path, content-type, body length).
fn collector() -> (String, mpsc::Receiver<(String, String, usize)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut length, mut kind) = (0usize, String::new());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => kind = v.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send((path, kind, body.len()));
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_when_the_endpoint_is_set() {
    let (url, posts) = collector();
    // Set before any thread of this test reads the environment.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &url);
    runtime::telemetry::init("otlp-test");
    assert!(
        runtime::trace::enabled(),
        "the endpoint switches tracing on"
    );

    let span = tracing::info_span!("command", r#type = "register_domain");
    let headers = {
        let _e = span.enter();
        runtime::trace::headers().expect("headers while tracing")
    };
    let tp = headers.get("traceparent").expect("a traceparent").as_str();
    assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
    drop(span);
    runtime::telemetry::shutdown();

    let (path, kind, len) = posts
        .recv_timeout(Duration::from_secs(10))
        .expect("the exporter posted the span");
    assert_eq!(path, "/v1/traces");
    assert_eq!(kind, "application/x-protobuf");
    assert!(len > 20, "a body with the span ({len} bytes)");
}
