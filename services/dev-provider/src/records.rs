//! The records a new domain is asked to publish, shaped like Resend's.

use base64::Engine;
use rand::RngCore;

/// Regions Resend accepts.
pub(crate) const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "sa-east-1", "ap-northeast-1"];
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// One record with its relative name, as Resend lists it.
#[derive(Debug, Clone)]
pub(crate) struct DevRecord {
    /// Resend's tag: `SPF`, `DKIM`, `Receiving`.
    pub record: &'static str,
    /// Relative to the domain; `@` is the apex.
    pub name: String,
    pub record_type: &'static str,
    pub value: String,
    pub priority: Option<u16>,
    pub status: String,
}

impl DevRecord {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "record": self.record,
            "name": self.name,
            "type": self.record_type,
            "ttl": "Auto",
            "status": self.status,
            "value": self.value,
        });
        if let Some(priority) = self.priority {
            json["priority"] = priority.into();
        }
        json
    }
}

/// Resend's sending records for a domain in `region`: return-path MX and SPF TXT at
/// `return_path` (default `send`), and a DKIM key at `resend._domainkey`. With
/// `receiving`, the inbound MX at the apex too (the adapter must drop it).
pub(crate) fn sending_records(region: &str, return_path: &str, receiving: bool) -> Vec<DevRecord> {
    let record = |record, name: &str, record_type, value: String, priority| DevRecord {
        record,
        name: name.to_owned(),
        record_type,
        value,
        priority,
        status: "not_started".to_owned(),
    };
    let mut records = vec![
        record(
            "SPF",
            return_path,
            "MX",
            format!("feedback-smtp.{region}.amazonses.com"),
            Some(10),
        ),
        record(
            "SPF",
            return_path,
            "TXT",
            "v=spf1 include:amazonses.com ~all".to_owned(),
            None,
        ),
        record(
            "DKIM",
            "resend._domainkey",
            "TXT",
            format!("p={}", dkim_public_key()),
            None,
        ),
    ];
    if receiving {
        records.push(record(
            "Receiving",
            "@",
            "MX",
            format!("inbound-smtp.{region}.amazonaws.com"),
            Some(10),
        ));
    }
    records
}

/// A random RSA-2048 public key in the shape DKIM publishes it: the DER
/// SubjectPublicKeyInfo (fixed header, 256-byte modulus, exponent 65537) in base64,
/// 392 characters. Random bytes, not a real key pair: nobody signs with it.
fn dkim_public_key() -> String {
    const HEADER: [u8; 33] = [
        0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
        0x01, 0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00, 0x30, 0x82, 0x01, 0x0a, 0x02, 0x82,
        0x01, 0x01, 0x00,
    ];
    const EXPONENT: [u8; 5] = [0x02, 0x03, 0x01, 0x00, 0x01];
    let mut modulus = [0u8; 256];
    rand::rng().fill_bytes(&mut modulus);
    modulus[0] |= 0x80;
    modulus[255] |= 0x01;
    let mut der = Vec::with_capacity(HEADER.len() + modulus.len() + EXPONENT.len());
    der.extend_from_slice(&HEADER);
    der.extend_from_slice(&modulus);
    der.extend_from_slice(&EXPONENT);
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_keys_are_rsa_2048_sized_and_differ() {
        let a = dkim_public_key();
        let b = dkim_public_key();
        assert_eq!(a.len(), 392);
        assert!(a.starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
        assert!(a.ends_with("IDAQAB"));
        assert_ne!(a, b);
    }

    #[test]
    fn records_follow_the_region() {
        let records = sending_records("eu-west-1", "send", false);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].value, "feedback-smtp.eu-west-1.amazonses.com");
        assert_eq!(records[0].priority, Some(10));
        assert!(records[2].value.len() > 255);
    }
}
