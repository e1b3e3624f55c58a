//! Transparency-log checkpoints and inclusion proofs (`sigstore::tlog`):
//! parsing and checking never panic, whatever the note or the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marque_verifier::sigstore::checkpoint::{Checkpoint, LogKey};
use marque_verifier::sigstore::tlog::InclusionProof;

fuzz_target!(|data: &[u8]| {
    static LOG: std::sync::OnceLock<LogKey> = std::sync::OnceLock::new();
    let log = LOG.get_or_init(|| {
        let key = marque_keys::SigningKey::generate(marque_keys::Algorithm::Ed25519).expect("key");
        LogKey::new("https://log.example", key.public_key().clone()).expect("log")
    });
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = Checkpoint::parse(text)
    {
        let _ = c.verify(log);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(p) = InclusionProof::from_json(&v)
    {
        let _ = p.verify(data, log);
    }
});
