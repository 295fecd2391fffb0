//! The `dev-dns` binary serves a zone file and picks up its changes.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ask(server: SocketAddr, name: &str, t: RecordType) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut m = Message::new();
    m.set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    sock.send_to(&m.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn txt(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::TXT(t) => Some(
                t.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A loopback port free for UDP and for TCP: dev-dns serves both, and a port free
/// for UDP only may have a TCP listener of another test on it (dev-dns then cannot
/// start, which this test once saw as a server that never answered).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn serves_the_zone_file_and_reloads_it() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = std::env::temp_dir().join(format!("dev-dns-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("zone.json");
    std::fs::write(
        &file,
        r#"[{"name":"send.demo.test","type":"TXT","value":"v=spf1 -all"}]"#,
    )
    .unwrap();
    let _child = Kill(
        Command::new(env!("CARGO_BIN_EXE_dev-dns"))
            .args([
                "--listen",
                &addr.to_string(),
                "--zone-file",
                file.to_str().unwrap(),
                "--poll-ms",
                "100",
            ])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(|| ask(addr, "send.demo.test.", RecordType::TXT)
            .is_some_and(|m| txt(&m) == ["v=spf1 -all"])),
        "dev-dns never answered on {addr} (its own error, if it stopped, is above)"
    );
    let nx = ask(addr, "nothing.demo.test.", RecordType::TXT).unwrap();
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);

    std::fs::write(
        &file,
        r#"{"zones":[{"apex":"demo.test","soa_minimum":5}],
            "records":[{"name":"send.demo.test","type":"TXT","value":"v=spf1 include:x.test ~all","ttl":60},
                       {"name":"send.demo.test","type":"MX","value":"mx.x.test","priority":10}]}"#,
    )
    .unwrap();
    assert!(wait_for(|| ask(addr, "send.demo.test.", RecordType::TXT)
        .is_some_and(|m| txt(&m) == ["v=spf1 include:x.test ~all"])));
    let mx = ask(addr, "send.demo.test.", RecordType::MX).unwrap();
    assert_eq!(mx.answers().len(), 1);
    // A rewrite of the same length straight after is seen too.
    let same_length = std::fs::read_to_string(&file)
        .unwrap()
        .replace("include:x.test", "include:y.test");
    std::fs::write(&file, same_length).unwrap();
    assert!(wait_for(|| ask(addr, "send.demo.test.", RecordType::TXT)
        .is_some_and(|m| txt(&m) == ["v=spf1 include:y.test ~all"])));
    let _ = std::fs::remove_dir_all(&dir);
}
